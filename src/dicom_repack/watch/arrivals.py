"""Which files under the watched folders are complete: inotify events, or polling.

A receiver (storescp ``-od``, an SFTP drop, a scanner's export) writes files into
a folder; a file is *complete* when its writer closed it. With inotify (Linux,
through the ``inotify_simple`` library) that is the ``IN_CLOSE_WRITE`` event, or
``IN_MOVED_TO`` for a file renamed into place (rsync, ``mv``); a file that appears
any other way (a hard link: ``IN_CREATE`` only; a file found by a scan) counts as
complete once its size and mtime have not changed for ``settle`` seconds, unless
its close event comes first. Where inotify cannot serve, the same rule runs on
periodic scans (``poll`` seconds apart):

- ``--poll SECONDS`` asks for it;
- a filesystem that sends no events for changes made by other hosts (NFS, CIFS,
  FUSE, ...: read from ``/proc/self/mountinfo``);
- a watch that cannot be added (``fs.inotify.max_user_watches``): one line, then
  polling;
- the kernel's event queue overflowed: one rescan, events go on.

Names still being written are left alone until renamed: hidden names (``.*``,
rsync's ``.name.XXXXXX``), ``*.part``, ``*.tmp`` and any ``--ignore`` glob; hidden
folders and the project's own folders (the data and log folders, when inside a
watched one) are never entered. New subfolders are watched as they appear
(storescp's ``--sort-on-study-uid``), and scanned, since files may land in them
before their watch exists.

Idle means idle: with inotify nothing runs until the kernel reports an event (no
timer), except the settle check of a file that appeared without a close event.
"""

from __future__ import annotations

import fnmatch
import itertools
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

__all__ = ["DEFAULT_IGNORE", "NO_EVENTS_FS", "Arrivals", "filesystem_type"]

#: names never taken as arrivals: still being written, or not ours to take
DEFAULT_IGNORE = (".*", "*.part", "*.tmp")

#: filesystems whose changes made elsewhere send no inotify events
NO_EVENTS_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs", "lustre")

# inotify(7) masks (the kernel ABI; inotify_simple's flags carry the same values)
_IN_MODIFY = 0x2
_IN_CLOSE_WRITE = 0x8
_IN_MOVED_FROM = 0x40
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x1000000
_IN_DONT_FOLLOW = 0x2000000
_IN_ISDIR = 0x40000000
_WATCH_MASK = (
    _IN_CLOSE_WRITE
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
    | _IN_DONT_FOLLOW
)

Signature = tuple[int, int]
"""(size, mtime in ns): what says a file changed."""


def filesystem_type(path: str) -> str:
    """The type of the filesystem holding ``path`` (``ext4``, ``nfs4``, ``fuse.sshfs``);
    "" if ``/proc/self/mountinfo`` cannot tell."""
    real = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mount = fields[4].replace("\\040", " ")
                inside = real == mount or real.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, right.split()[0]
    except OSError:
        return ""
    return kind


def _no_events(kind: str) -> bool:
    return kind in NO_EVENTS_FS or kind.startswith("fuse")


class Arrivals:
    """The complete files under ``roots``, each reported once per change.

    Use::

        arrivals = Arrivals(["/incoming"], exclude=["/data", "/log"])
        arrivals.start()                 # watches first, then the scan of what is there
        while True:
            for path in arrivals.take():
                ...                      # file it
            wait on arrivals.fileno() (when not None) for at most arrivals.wake_after() s

    ``take`` never blocks. A path comes back again only once its size or mtime
    changed since it was taken (:meth:`forget` lets it come back as it is: a
    move that filed it, or ``--retry-failed``).
    """

    def __init__(
        self,
        roots: Iterable[str],
        *,
        exclude: Iterable[str] = (),
        ignore: Iterable[str] = (),
        poll: float | None = None,
        settle: float = 1.0,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.roots = [os.path.abspath(r) for r in roots]
        self._exclude = {os.path.realpath(p) for p in exclude}
        self._ignore = tuple(DEFAULT_IGNORE) + tuple(ignore)
        self.settle = settle
        self.poll = poll
        self.say = say
        #: why we poll ("" while inotify serves)
        self.polling_because = "--poll" if poll is not None else ""
        self._inotify: object | None = None
        self._wd: dict[int, str] = {}
        #: path -> (signature, when it was last seen to change): files waiting to settle
        self._settling: dict[str, tuple[Signature, float]] = {}
        #: path -> signature when taken
        self._taken: dict[str, Signature] = {}
        self._ready: dict[str, None] = {}  # ordered set
        self._next_scan = 0.0
        #: the kernel's event queue overflowed: the folders are scanned at the next take,
        #: once what the events said is handed out (:meth:`take`)
        self._rescan_due = False
        self._rescan_waited = False
        #: a scan after an overflow, under way: a take advances it by what it hands out
        self._rescanning: Iterator[tuple[str, os.stat_result]] | None = None
        self.rescans = 0
        self.overflows = 0

    # -- life ----------------------------------------------------------------------------

    def start(self) -> None:
        """Watch every folder (unless polling), then scan what is already there."""
        if not self.polling_because:
            for root in self.roots:
                kind = filesystem_type(root)
                if _no_events(kind):
                    self._fall_back(f"{root} is on {kind}, which sends no change events")
                    break
        if not self.polling_because:
            try:
                from inotify_simple import INotify
            except ImportError:  # pragma: no cover - a dependency
                self._fall_back("inotify_simple is not installed")
            else:
                try:
                    self._inotify = INotify(nonblocking=True)
                except OSError as exc:
                    self._fall_back(f"inotify is not available ({exc.strerror})")
        self._scan_all(time.monotonic())

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()  # type: ignore[attr-defined]
            self._inotify = None

    def fileno(self) -> int | None:
        """The inotify descriptor to wait on for events; None when polling."""
        if self._inotify is None:
            return None
        return int(self._inotify.fileno())  # type: ignore[attr-defined]

    def wake_after(self) -> float | None:
        """Seconds until something may become complete without an event (None: only on
        an event): the next settle check, or the next scan when polling."""
        now = time.monotonic()
        due: list[float] = []
        if self._ready or self._rescan_due or self._rescanning is not None:
            return 0.0
        if self._settling:
            due.append(min(t for _, t in self._settling.values()) + self.settle - now)
        if self.polling_because:
            due.append(self._next_scan - now)
        return max(0.0, min(due)) if due else None

    # -- the arrivals ----------------------------------------------------------------------

    def waiting(self) -> bool:
        """Whether events wait to be read (inotify's descriptor is readable now): files
        are arriving faster than they are taken. False when polling."""
        fd = self.fileno()
        if fd is None:
            return False
        import select

        return bool(select.select([fd], [], [], 0)[0])

    def take(self, most: int | None = None) -> list[str]:
        """The files complete now and not taken before as they are (never blocks); at
        most ``most`` of them (the rest wait for the next take: :meth:`ready`).

        A burst (thousands of files renamed in) is taken a share at a time, so that its
        first files are handed out before the last are looked at. A scan after an
        overflow of the kernel's queue (a listing and a stat of every file, ~0.3 s for
        50,000) starts only at the take after the one that gave out what the events had
        said (one take later, whatever arrives meanwhile: never put off longer), and with
        ``most`` goes on a share per take: the workers file the first files found while
        this process stats the next, instead of all of them waiting for the whole scan.
        """
        now = time.monotonic()
        if self._inotify is not None:
            self._read_events(now)
        if self._rescan_due:
            if most is None:
                self._rescan_due = self._rescan_waited = False
                self._scan_all(now)
            elif self._ready and not self._rescan_waited:
                self._rescan_waited = True  # this take's paths first; the scan at the next
            else:
                self._rescan_due = self._rescan_waited = False
                self.rescans += 1
                self._rescanning = itertools.chain.from_iterable(map(self._walk, self.roots))
        if self._rescanning is not None:
            self._scan_some(most, now)
        if self.polling_because and now >= self._next_scan:
            self._scan_all(now)
        if self._settling:
            self._check_settling(now)
        if most is None or len(self._ready) <= most:
            batch = list(self._ready)
            self._ready.clear()
        else:
            batch = list(itertools.islice(self._ready, most))
            for path in batch:
                del self._ready[path]
        return [path for path in batch if self.mark(path) is not None]

    def ready(self) -> int:
        """Files complete and not taken yet (a take's ``most`` left them for the next);
        one more when a scan is due or under way (an overflow)."""
        return len(self._ready) + (self._rescan_due or self._rescanning is not None)

    def forget(self, path: str) -> None:
        """Let ``path`` be taken again even unchanged (filed by a move; --retry-failed)."""
        self._taken.pop(path, None)

    def taken(self, path: str, signature: Signature) -> None:
        """Count ``path`` as taken in this state (what an earlier run filed, from the index)."""
        self._taken[path] = signature

    def pending(self) -> int:
        """Files seen but not yet complete."""
        return len(self._settling)

    # -- inotify -----------------------------------------------------------------------------

    def _watch(self, folder: str) -> bool:
        """Add a watch on ``folder``; on a limit, fall back to polling (False)."""
        if self._inotify is None:
            return False
        try:
            wd = self._inotify.add_watch(folder, _WATCH_MASK)  # type: ignore[attr-defined]
        except OSError as exc:
            if exc.errno in (28, 24):  # ENOSPC: max_user_watches; EMFILE: max_user_instances
                self._fall_back(
                    f"cannot watch {folder}: {exc.strerror} (raise fs.inotify.max_user_watches)"
                )
            return False  # ENOENT, ENOTDIR, ELOOP: gone or not a folder any more
        self._wd[wd] = folder
        return True

    def _read_events(self, now: float) -> None:
        from inotify_simple import parse_events

        fd = self.fileno()
        assert fd is not None
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not data:
                return
            overflow = False
            for ev in parse_events(data):
                mask = ev.mask
                if mask & _IN_Q_OVERFLOW:
                    overflow = True
                    continue
                folder = self._wd.get(ev.wd)
                if folder is None:
                    continue
                if mask & _IN_IGNORED:
                    del self._wd[ev.wd]
                    continue
                if not ev.name or self._ignored(ev.name):
                    continue
                path = f"{folder}/{ev.name}"
                if mask & _IN_ISDIR:
                    if mask & (_IN_CREATE | _IN_MOVED_TO):
                        self._scan(path, now)  # watched, then scanned: nothing slips by
                elif mask & (_IN_CLOSE_WRITE | _IN_MOVED_TO):
                    self._settling.pop(path, None)
                    self._offer(path)
                elif mask & _IN_CREATE:
                    self._settle(path, now)  # a hard link, a mknod: no close will come
            if overflow:
                self.overflows += 1
                self.say("the kernel's event queue overflowed; rescanning the watched folders")
                self._rescan_due = True  # at the next take (see take)

    def _fall_back(self, why: str) -> None:
        if self.polling_because:
            return
        self.polling_because = why
        if self.poll is None:
            self.poll = 2.0
        self.say(f"{why}: polling every {self.poll:g} s instead of using events")
        self.close()
        self._wd.clear()

    # -- scans -------------------------------------------------------------------------------

    def _scan_all(self, now: float) -> None:
        self.rescans += 1
        for root in self.roots:
            self._scan(root, now)
        if self.polling_because and self.poll is not None:
            self._next_scan = now + self.poll

    def _scan(self, top: str, now: float) -> None:
        """Watch (when events serve) and scan ``top`` and every folder below it, in name
        order: each file becomes ready now if it has not changed for ``settle`` s, else
        it settles first."""
        for path, st in self._walk(top):
            self._found(path, st, now)

    def _scan_some(self, most: int | None, now: float) -> None:
        """Advance the scan under way until ``most`` files are ready (None: to its end): a
        take after an overflow gives out a share of the folder, stat'ed as it goes,
        instead of every file of it first (~0.3 s for 50,000, the workers waiting)."""
        assert self._rescanning is not None
        if most is not None and len(self._ready) >= most:
            return
        for path, st in self._rescanning:
            self._found(path, st, now)
            if most is not None and len(self._ready) >= most:
                return
        self._rescanning = None  # done

    def _found(self, path: str, st: os.stat_result, now: float) -> None:
        """A file a scan found: ready now if it has not changed for ``settle`` s, else it
        settles first; nothing if taken as it is or ready already."""
        sig = (st.st_size, st.st_mtime_ns)
        if self._taken.get(path) == sig or path in self._ready:
            return
        if time.time() - st.st_mtime >= self.settle:
            self._settling.pop(path, None)
            self._ready[path] = None
        else:
            self._settle(path, now)

    def _walk(self, top: str) -> Iterator[tuple[str, os.stat_result]]:
        if os.path.realpath(top) in self._exclude:
            return
        self._watch(top)
        try:  # (name, folder?) pairs, not DirEntry objects: a rescan of 50,000 files
            with os.scandir(top) as it:  # after an overflow held 16 MB of them, now 7.6
                entries = sorted((e.name, _is_dir(e)) for e in it)
        except OSError:
            return  # gone, or not readable: nothing to take there
        for name, is_dir in entries:
            if is_dir is None or self._ignored(name):
                continue
            path = os.path.join(top, name)
            if is_dir:
                yield from self._walk(path)
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            yield path, st

    # -- completeness ------------------------------------------------------------------------

    def _ignored(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self._ignore)

    def _settle(self, path: str, now: float) -> None:
        try:
            st = os.lstat(path)
        except OSError:
            self._settling.pop(path, None)
            return
        sig = (st.st_size, st.st_mtime_ns)
        if self._taken.get(path) == sig:
            return
        seen = self._settling.get(path)
        if seen is None or seen[0] != sig:
            self._settling[path] = (sig, now)

    def _check_settling(self, now: float) -> None:
        for path, (sig, since) in list(self._settling.items()):
            if now - since < self.settle:
                continue
            try:
                st = os.lstat(path)
            except OSError:
                del self._settling[path]  # gone before it settled
                continue
            current = (st.st_size, st.st_mtime_ns)
            if current != sig:
                self._settling[path] = (current, now)
            else:
                del self._settling[path]
                self._offer(path)

    def _offer(self, path: str) -> None:
        """A complete file, unless it is exactly as it was when last taken."""
        try:
            st = os.lstat(path)
        except OSError:
            return  # gone already (moved on, or filed by someone else)
        if self._taken.get(path) == (st.st_size, st.st_mtime_ns):
            return
        self._ready[path] = None

    def mark(self, path: str) -> Signature | None:
        """Remember ``path`` as taken in its current state; its signature, or None if gone."""
        try:
            st = os.lstat(path)
        except OSError:
            self._taken.pop(path, None)
            return None
        sig = (st.st_size, st.st_mtime_ns)
        self._taken[path] = sig
        return sig


def _is_dir(entry: os.DirEntry[str]) -> bool | None:
    """Whether ``entry`` is a folder (not through a link); None when that cannot be told."""
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return None

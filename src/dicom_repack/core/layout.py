"""Tag values -> a safe relative path: the template language and the one sanitising rule.

A layout is four templates (root, study, series, image) in px-repack's language:
``%Keyword`` is replaced by the element's value, and ``%_func|args_Keyword`` applies
one function to it first (``pad``, ``md5``, ``seahash``, ``strmsk``, ``nospc``).
Each of the four resulting names then goes through :func:`safe_name`, which is the
only place that decides what may appear in a path: nothing a tag says can leave
the data or log folder.

Two presets: :meth:`Layout.rx` (rx-repack 1.0, the default: series number padded,
an empty element counts as absent) and :meth:`Layout.px` (px-repack 3.12.6's
default templates, an empty element gives an empty string).

No ``re`` import here: this module is on the per-instance hot path.
"""

from __future__ import annotations

from .errors import TemplateError

TYPE_CHECKING = False  # typing/collections.abc cost ~5 ms to import; this module is on the hot path
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "FUNCTIONS",
    "PX_TEMPLATES",
    "RX_TEMPLATES",
    "Layout",
    "Plan",
    "safe_name",
]

#: rx-repack 1.0's layout, expressed in px-repack's template language.
RX_TEMPLATES = (
    "%PatientID-%PatientName-%PatientBirthDate",
    "%StudyDescription-%AccessionNumber-%StudyDate",
    "%_pad|5,0_SeriesNumber-%SeriesDescription-%_seahash|7_SeriesInstanceUID",
    "%_pad|4,0_InstanceNumber-%SOPInstanceUID.dcm",
)
#: px-repack 3.12.6's default templates.
PX_TEMPLATES = (
    "%PatientID-%PatientName-%PatientBirthDate",
    "%StudyDescription-%AccessionNumber-%StudyDate",
    "%SeriesDescription-%_seahash|7_SeriesInstanceUID",
    "%_pad|4,0_InstanceNumber-%SOPInstanceUID.dcm",
)
TEMPLATE_OPTIONS = (
    "--rootDirTemplate",
    "--studyDirTemplate",
    "--seriesDirTemplate",
    "--imageTemplate",
)

FUNCTIONS = frozenset({"pad", "md5", "seahash", "strmsk", "nospc"})

#: Longest file name most filesystems accept (bytes; safe names are ASCII).
NAME_MAX = 255

_ALLOWED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-")
_DELETE_ALLOWED = {ord(c): None for c in _ALLOWED}


def safe_name(text: str, suffix: str = "") -> str:
    """The one sanitising rule: ``text`` (+ ``suffix``) as a single safe path component.

    NUL characters are removed, then every run of characters outside
    ``[A-Za-z0-9.-]`` becomes one ``_`` (rx-repack's and px-repack's rule). Beyond
    theirs: a name that is empty or only dots (``.``/``..``) has its dots replaced,
    so it can never mean "here" or "up"; a name longer than 255 bytes is cut and
    given a hash of the whole, so distinct long values stay distinct. What is cut
    is ``text``: a ``suffix`` (a record's ``-meta.json``, a folder's ``-img``, a
    literal the caller chose) is always kept whole, and without one a short
    extension (``.dcm``) is. Data names (:meth:`Layout.plan`) and record names
    (:func:`~.records.record_paths`) are both made here, so both obey it.
    """
    text = text.replace("\0", "")
    if text.translate(_DELETE_ALLOWED):  # something outside the allowed set
        out: list[str] = []
        in_run = False
        for ch in text:
            if ch in _ALLOWED:
                out.append(ch)
                in_run = False
            elif not in_run:
                out.append("_")
                in_run = True
        text = "".join(out)
    name = text + suffix
    if not name.strip("."):
        name = name.replace(".", "_") or "_"
    if len(name) > NAME_MAX:
        if suffix:
            ext = suffix
        else:
            dot = name.rfind(".")
            ext = name[dot:] if 0 < len(name) - dot <= 8 else ""
        digest = _seahash_hex(name)[:8]
        keep = NAME_MAX - len(digest) - 1 - len(ext)
        name = f"{name[:keep]}-{digest}{ext}"
    return name


_MASK64 = (1 << 64) - 1
_SEAHASH_P = 0x6EED0E9DA4D94A4F
_SEAHASH_SEED = (0x16F11FE89B0D677C, 0xB480A793D8E6C86C, 0x6FE2E5AAF078EBC9, 0x14F994A4C5259381)


def _diffuse(x: int) -> int:
    x = (x * _SEAHASH_P) & _MASK64
    x ^= (x >> 32) >> (x >> 60)
    return (x * _SEAHASH_P) & _MASK64


def seahash64(data: bytes) -> int:
    """SeaHash (64-bit, default seeds) of ``data``: rx-repack's series-folder suffix.

    Hand-written because loading the ``seahash`` C extension costs ~0.5 ms, more
    than hashing a UID here (~3 µs), and the per-instance door pays every import.
    tests/test_layout.py holds it equal to the ``seahash`` package on random input.
    """
    lanes = list(_SEAHASH_SEED)
    for i in range(0, len(data), 8):
        j = (i >> 3) & 3
        lanes[j] = _diffuse(lanes[j] ^ int.from_bytes(data[i : i + 8], "little"))
    return _diffuse(lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3] ^ len(data))


def _seahash_hex(text: str) -> str:
    """Lower-case hex without zero padding, as rx-repack and pypx print it."""
    return format(seahash64(text.encode("utf-8")), "x")


class _Field:
    __slots__ = ("arg", "func", "keyword")

    def __init__(self, keyword: str, func: str, arg: str) -> None:
        self.keyword = keyword
        self.func = func
        self.arg = arg


_KEYWORD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


def parse_template(template: str, option: str = "template") -> tuple[str | _Field, ...]:
    """Split a px-repack template into literal text and fields; refuse unknown functions.

    Keywords are checked against the DICOM dictionary by :class:`Layout`, once.
    """
    parts: list[str | _Field] = []
    literal: list[str] = []
    i, n = 0, len(template)
    while i < n:
        pct = template.find("%", i)
        if pct < 0:
            literal.append(template[i:])
            break
        if pct > i:
            literal.append(template[i:pct])
        i = pct + 1
        func = arg = ""
        if i < n and template[i] == "_":
            end = template.find("_", i + 1)
            if end < 0:
                raise TemplateError(
                    f"{option} {template!r}: unterminated function at {template[i - 1 :]!r}"
                )
            spec = template[i + 1 : end]
            func, _, arg = spec.partition("|")
            if func not in FUNCTIONS:
                raise TemplateError(
                    f"{option} {template!r}: unknown function {func!r} "
                    f"(known: {', '.join(sorted(FUNCTIONS))})"
                )
            i = end + 1
        start = i
        while i < n and template[i] in _KEYWORD_CHARS:
            i += 1
        keyword = template[start:i]
        if not keyword:
            raise TemplateError(f"{option} {template!r}: '%' is not followed by a DICOM keyword")
        if func == "pad":
            width, _, _fill = arg.partition(",")
            if arg and not width.isdigit():
                raise TemplateError(f"{option} {template!r}: %_pad needs a width, as in %_pad|4,0_")
        if func in ("md5", "seahash") and arg and not arg.isdigit():
            raise TemplateError(
                f"{option} {template!r}: %_{func} takes a length, as in %_{func}|7_"
            )
        if literal:
            parts.append("".join(literal))
            literal.clear()
        parts.append(_Field(keyword, func, arg))
    if literal:
        parts.append("".join(literal))
    return tuple(parts)


def _apply(func: str, arg: str, value: str) -> str:
    if func == "pad":
        width, _, fill = arg.partition(",")
        return value.rjust(int(width), fill[:1] or "0") if width else value
    if func == "seahash":
        digest = _seahash_hex(value)
        return digest[: int(arg)] if arg else digest
    if func == "md5":
        import hashlib

        digest = hashlib.md5(value.encode("utf-8")).hexdigest()
        return digest[: int(arg)] if arg else digest
    if func == "strmsk":
        return "".join(v if m == "*" else m for v, m in zip(value, arg, strict=False))
    if func == "nospc":
        words = "".join(c if (c.isalnum() or c == "_") else " " for c in value).split()
        return arg.join(words)
    raise AssertionError(func)  # parse_template refuses anything else


class Plan:
    """Where one instance goes: four safe names and the keywords that were missing."""

    __slots__ = ("image", "missing", "root", "series", "study")

    def __init__(
        self, root: str, study: str, series: str, image: str, missing: tuple[str, ...]
    ) -> None:
        self.root = root
        self.study = study
        self.series = series
        self.image = image
        self.missing = missing

    @property
    def series_dir(self) -> str:
        return f"{self.root}/{self.study}/{self.series}"

    @property
    def relpath(self) -> str:
        return f"{self.root}/{self.study}/{self.series}/{self.image}"


class Layout:
    """Four compiled templates and the rule for empty elements.

    Build one with :meth:`rx`, :meth:`px` or :meth:`from_options`; it is checked
    when built (unknown keyword or function: TemplateError) and is then cheap to
    apply to every instance with :meth:`plan`.
    """

    __slots__ = ("_compiled", "empty_as_absent", "keywords", "name", "templates")

    def __init__(
        self,
        templates: Iterable[str],
        *,
        empty_as_absent: bool,
        name: str = "custom",
        check: bool = True,
    ) -> None:
        self.templates = tuple(templates)
        if len(self.templates) != 4:
            raise TemplateError("a layout has exactly four templates: root, study, series, image")
        self.name = name
        self.empty_as_absent = empty_as_absent
        self._compiled = tuple(
            parse_template(t, opt) for t, opt in zip(self.templates, TEMPLATE_OPTIONS, strict=True)
        )
        kws: list[str] = []
        for parts in self._compiled:
            for p in parts:
                if isinstance(p, _Field) and p.keyword not in kws:
                    kws.append(p.keyword)
        self.keywords: tuple[str, ...] = tuple(kws)
        if check:
            from .keywords import lookup

            for opt, parts in zip(TEMPLATE_OPTIONS, self._compiled, strict=True):
                for p in parts:
                    if isinstance(p, _Field) and lookup(p.keyword) is None:
                        raise TemplateError(f"{opt}: unknown DICOM keyword {p.keyword!r}")

    @classmethod
    def rx(cls) -> Layout:
        """rx-repack 1.0's layout (the default)."""
        return cls(RX_TEMPLATES, empty_as_absent=True, name="rx", check=False)

    @classmethod
    def px(cls) -> Layout:
        """px-repack 3.12.6's default layout."""
        return cls(PX_TEMPLATES, empty_as_absent=False, name="px", check=False)

    @classmethod
    def from_options(
        cls,
        layout: str | None = None,
        root: str | None = None,
        study: str | None = None,
        series: str | None = None,
        image: str | None = None,
    ) -> Layout:
        """The layout a command line asks for.

        ``--layout rx`` (default) or ``px`` picks a preset. Any px-repack template
        option means px-repack semantics (its defaults fill the other templates),
        since those options exist so that an existing px-repack command line keeps
        its tree when only the program name changes.
        """
        custom = (root, study, series, image)
        if layout not in (None, "rx", "px"):
            raise TemplateError(f"--layout must be 'rx' or 'px', not {layout!r}")
        if all(t is None for t in custom):
            return cls.px() if layout == "px" else cls.rx()
        base = RX_TEMPLATES if layout == "rx" else PX_TEMPLATES
        templates = tuple(t if t is not None else b for t, b in zip(custom, base, strict=True))
        return cls(templates, empty_as_absent=(layout == "rx"), name="custom")

    def plan(self, values: Mapping[str, str], empty: Iterable[str] = ()) -> Plan:
        """Apply the templates to one instance's values (as :class:`~.header.Header` gives them).

        An absent element (or, under ``empty_as_absent``, an empty one) is reported
        in ``missing`` and replaced by its keyword: ``Keyword`` as rx-repack writes
        it, or, under px-repack's semantics, ``_Keyword`` (px-repack leaves
        ``%Keyword`` unreplaced). Values are stripped of surrounding whitespace.
        Under rx semantics a value rx-repack decodes differently (``values.rx_text``,
        see :class:`~.header_pydicom.RxValues`: ISO 2022 names) is taken as rx-repack reads it.
        """
        empty_set = frozenset(empty) if self.empty_as_absent else frozenset()
        # rx semantics: a value rx-repack reads in another character set is named as it
        # reads it (an ISO 2022 name with its escape sequences: header_pydicom.RxValues)
        rx_text: Mapping[str, str] = (
            getattr(values, "rx_text", None) or {} if self.empty_as_absent else {}
        )
        missing: list[str] = []
        names: list[str] = []
        for parts in self._compiled:
            out: list[str] = []
            for p in parts:
                if isinstance(p, str):
                    out.append(p)
                    continue
                raw = rx_text.get(p.keyword) or values.get(p.keyword)
                if raw is None or p.keyword in empty_set:
                    if p.keyword not in missing:
                        missing.append(p.keyword)
                    if not self.empty_as_absent:
                        # px-repack leaves "%Keyword" in place (no function applied),
                        # which the sanitising rule turns into "_Keyword"
                        out.append("%" + p.keyword)
                        continue
                    value = p.keyword
                else:
                    value = raw.strip()
                out.append(_apply(p.func, p.arg, value) if p.func else value)
            names.append(safe_name("".join(out)))
        return Plan(names[0], names[1], names[2], names[3], tuple(missing))

    def __repr__(self) -> str:
        return f"Layout({self.name!r}, {self.templates!r}, empty_as_absent={self.empty_as_absent})"

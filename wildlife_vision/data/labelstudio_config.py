"""Label Studio labelling configs: the documented config, its ``Choices`` controls, and Choice value <-> label mapping.

A labelling config (the project's XML) says which ``Choices`` controls exist, which object each one labels
(``toName``), the Choice values annotators click and their optional ``alias`` (when set, Label Studio stores
the alias in results instead of the value). :class:`ChoiceMapper` turns a stored choice into a manifest label
and back, one rule for import and export:

1. an explicit mapping (``--map`` / ``--label-map`` file) wins;
2. else the Choice's ``alias`` (a value given as ``alias`` maps the same way);
3. else the normalised ASCII text ("Rhino horn" -> ``rhino_horn``); a choice in :data:`NONE_CHOICES` means
   "none of the classes" (empty labels).

Text with non-ASCII letters ("象牙", "Рог носорога") is never normalised to a guess: without a mapping or
alias it is *unmapped*, and the import stops listing such values instead of reading them as "none".
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

#: the labelling config documented in docs/data-curation.md (also tests/fixtures/labelstudio/documented.xml)
DOCUMENTED_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <Choices name="label" toName="image" choice="multiple">
    <Choice value="Ivory"/><Choice value="Rhino horn"/><Choice value="Pangolin scales"/>
    <Choice value="Tiger parts"/><Choice value="Live animal"/><Choice value="none"/>
  </Choices>
</View>
"""

#: choices (after normalisation) that mean "none of the classes"
NONE_CHOICES = frozenset({"none", "nothing", "negative", "clean", "no_wildlife_product",
                          "no_wildlife", "no_product", "not_wildlife", "no_label", "none_of_the_above"})


class LabelStudioError(ValueError):
    """The file is not a Label Studio export, config or prediction file this module understands."""


def normalise_choice(text: str) -> str:
    """"Rhino horn" -> "rhino_horn", "Live-Animal" -> "live_animal" (lower case, other characters to _)."""
    return re.sub(r"[^0-9a-z]+", "_", str(text).strip().lower()).strip("_")


def _has_non_ascii_letters(text: str) -> bool:
    return any(ord(ch) > 127 and ch.isalpha() for ch in str(text))


@dataclass
class ChoicesControl:
    """One ``<Choices>`` control: its name (``from_name``), the objects it labels, its Choice values and aliases."""

    name: str
    to_names: List[str]
    values: List[str]
    aliases: Dict[str, str] = field(default_factory=dict)   # value -> alias (only Choices that have one)
    multiple: bool = False

    def stored(self, value: str) -> str:
        """What Label Studio stores in a result for this Choice: the alias when there is one, else the value."""
        return self.aliases.get(value, value)


@dataclass
class LabelConfig:
    """The parts of a labelling config the import/export need."""

    choices: List[ChoicesControl]
    other_controls: Dict[str, str]        # name -> tag (Taxonomy, Labels, TextArea...)
    objects: Dict[str, str]               # object name -> data key ("image" for value="$image")
    source: str = "the labelling config"

    def control(self, from_name: Optional[str]) -> ChoicesControl:
        """The Choices control to read: ``from_name``, or the only one; a clear error otherwise."""
        names = [c.name for c in self.choices]
        if from_name:
            for c in self.choices:
                if c.name == from_name:
                    return c
            if from_name in self.other_controls:
                raise LabelStudioError(f"--from-name {from_name!r} is a {self.other_controls[from_name]} control in "
                                       f"{self.source}, not Choices; only Choices (image classification) is supported")
            raise LabelStudioError(f"--from-name {from_name!r}: {self.source} has no such Choices control "
                                   f"(Choices controls: {names or 'none'})")
        if not self.choices:
            other = ", ".join(f"{t} {n!r}" for n, t in self.other_controls.items()) or "no controls"
            raise LabelStudioError(f"{self.source} has no Choices control ({other}); only Choices "
                                   "(image classification) can be imported or exported")
        if len(self.choices) > 1:
            raise LabelStudioError(f"{self.source} has several Choices controls ({', '.join(names)}); "
                                   "pass --from-name to say which one holds the labels")
        return self.choices[0]


def parse_config(xml_text: str, source: str = "the labelling config") -> LabelConfig:
    """Parse a labelling config's XML (``<View>...</View>``)."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as e:
        raise LabelStudioError(f"{source} is not valid XML: {e}") from None
    choices: List[ChoicesControl] = []
    other: Dict[str, str] = {}
    objects: Dict[str, str] = {}
    for el in root.iter():
        name = el.attrib.get("name")
        if el.tag == "Choices" and name:
            values, aliases = [], {}
            for ch in el.iter("Choice"):
                v = ch.attrib.get("value")
                if v is None:
                    continue
                values.append(v)
                if ch.attrib.get("alias"):
                    aliases[v] = ch.attrib["alias"]
            to = [t.strip() for t in el.attrib.get("toName", "").split(",") if t.strip()]
            choices.append(ChoicesControl(name=name, to_names=to, values=values, aliases=aliases,
                                          multiple=el.attrib.get("choice", "single") == "multiple"))
        elif name and "toName" in el.attrib:
            other[name] = el.tag
        elif name and str(el.attrib.get("value", "")).startswith("$"):
            objects[name] = el.attrib["value"][1:]
    return LabelConfig(choices=choices, other_controls=other, objects=objects, source=source)


def read_config(path: Optional[str]) -> LabelConfig:
    """A config file (``None``: the documented config)."""
    if path is None:
        return parse_config(DOCUMENTED_CONFIG, "the documented config (docs/data-curation.md)")
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise LabelStudioError(f"--config {path}: {e.strerror or e}") from None
    return parse_config(text, f"--config {path}")


def read_label_map(path: str) -> Dict[str, str]:
    """A ``--label-map`` file: a JSON object ``{"象牙": "ivory", ...}``, or lines ``CHOICE=LABEL`` (``#`` comments).

    A label of ``""`` or ``none`` means "none of the classes"."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except OSError as e:
        raise LabelStudioError(f"--label-map {path}: {e.strerror or e}") from None
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelStudioError(f"--label-map {path} is not valid JSON: {e}") from None
        if not all(isinstance(v, str) for v in data.values()):
            raise LabelStudioError(f"--label-map {path}: every value must be a label name (a string)")
        return {str(k): v for k, v in data.items()}
    out = {}
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise LabelStudioError(f"--label-map {path} line {n}: expected CHOICE=LABEL, got {line!r}")
        a, b = line.split("=", 1)
        out[a.strip()] = b.strip()
    return out


class ChoiceMapper:
    """Stored choice <-> manifest label for one Choices control (see the module docstring for the rules)."""

    def __init__(self, control: Optional[ChoicesControl] = None, label_map: Optional[Mapping[str, str]] = None,
                 none_choices: Iterable[str] = ()):
        self.control = control
        self.label_map = dict(label_map or {})
        self.nones = set(NONE_CHOICES) | {normalise_choice(c) for c in none_choices}
        self.alias_of: Dict[str, str] = {}
        self.value_of: Dict[str, str] = {}
        if control is not None:
            for v, a in control.aliases.items():
                self.alias_of[v] = a
                self.alias_of[a] = a
                self.value_of[a] = v

    def _from_text(self, text: str) -> Optional[str]:
        if _has_non_ascii_letters(text):
            return None
        n = normalise_choice(text)
        if not n:
            return None
        return "" if n in self.nones else n

    def to_label(self, choice: str) -> Optional[str]:
        """A stored choice -> a manifest label, ``""`` for "none of the classes", ``None`` when unmapped."""
        choice = str(choice)
        key = choice if choice in self.label_map else self.value_of.get(choice)
        if key in self.label_map:
            target = self.label_map[key].strip()
            return "" if not target or normalise_choice(target) in self.nones else target
        if choice in self.alias_of:
            return self._from_text(self.alias_of[choice])
        return self._from_text(choice)

    def choice_for(self) -> Dict[str, str]:
        """For export: manifest label -> the stored choice (alias or value), and ``""`` -> the 'none' choice if any."""
        if self.control is None:
            raise LabelStudioError("a Choices control is needed to map labels to Choice values")
        out: Dict[str, str] = {}
        for v in self.control.values:
            lab = self.to_label(v)
            if lab is not None and lab not in out:
                out[lab] = self.control.stored(v)
        return out

    def unmapped_values(self) -> List[str]:
        """Choice values of the control that map to no label (e.g. non-ASCII values without a mapping)."""
        if self.control is None:
            return []
        return [v for v in self.control.values if self.to_label(self.control.stored(v)) is None]


def parse_map(items: Optional[Sequence[str]], flag: str) -> dict:
    """FROM=TO items (repeatable --map) as a dict."""
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ValueError(f"{flag} takes FROM=TO, got {it!r}")
        a, b = it.split("=", 1)
        out[a.strip()] = b.strip()
    return out


def ls_maps(args):
    """--config, --label-map and --map of the Label Studio commands -> (config or None, choice map, --map items)."""
    config = read_config(args.config) if args.config else None
    choice_map = read_label_map(args.label_map) if args.label_map else {}
    return config, choice_map, parse_map(args.map, "--map")


__all__ = ["DOCUMENTED_CONFIG", "NONE_CHOICES", "LabelStudioError", "normalise_choice", "ChoicesControl",
           "LabelConfig", "parse_config", "read_config", "read_label_map", "ChoiceMapper", "parse_map", "ls_maps"]

"""Validates OCSF JSON lines against the official OCSF export for the version
each line claims (`metadata.version`), as bundled by the PyPI package
`ocsf-json-schema`, with `jsonschema` (Draft 2020-12).

    python validate.py FILE...      (JSON lines; "-" is stdin)

Checked for every line:
- the JSON Schema of its class (from `class_uid`) with the profiles it
  declares (`metadata.profiles`): required attributes, types, enum values,
  unknown attributes (`additionalProperties: false` on every OCSF object),
  OCSF constraints (at_least_one, just_one), ranges and patterns;
- `type_uid == class_uid * 100 + activity_id`;
- `category_uid` is the class's category;
- every caption next to an enum id (`severity` beside `severity_id`, ...)
  is that id's caption in the schema (except for 99, "Other").

Prints one line per problem, `FILE:LINE: what`, and a summary; exits 1 if
any line is invalid or no line was read, 2 on bad usage.
"""

import importlib.metadata
import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema, get_packaged_versions

_schemas = {}
_validators = {}


def schema_of(version):
    if version not in _schemas:
        if version not in get_packaged_versions():
            raise ValueError(
                f"metadata.version {version!r} is not an OCSF release "
                f"(known: {', '.join(sorted(get_packaged_versions()))})"
            )
        _schemas[version] = get_ocsf_schema(version)
    return _schemas[version]


def validator_of(version, class_uid, profiles):
    key = (version, class_uid, tuple(sorted(profiles)))
    if key not in _validators:
        raw = schema_of(version)
        emb = OcsfJsonSchemaEmbedded(raw)
        name = emb.lookup_class_name_from_uid(class_uid)
        known = raw["profiles"].keys() if isinstance(raw["profiles"], dict) else raw["profiles"]
        unknown = [p for p in profiles if p not in known]
        if unknown:
            raise ValueError(f"metadata.profiles names unknown profiles {unknown}")
        schema = emb.get_class_schema(name, list(profiles))
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _validators[key] = (cls(schema), raw["classes"][name], raw)
    return _validators[key]


def attr_defs(raw, obj_or_class):
    return obj_or_class.get("attributes", {})


def check_captions(raw, cls, value, path, problems):
    """`X` beside `X_id` must be the caption of that id (recursively)."""

    def walk(defn, v, where):
        if not isinstance(v, dict):
            return
        attrs = defn.get("attributes", {})
        for k, sub in v.items():
            a = attrs.get(k)
            if a is None:
                continue
            if k.endswith("_id") and a.get("enum") and isinstance(sub, int):
                caption_key = k[: -len("_id")]
                if caption_key in v and sub != 99:
                    want = a["enum"].get(str(sub), {}).get("caption")
                    if want is not None and v[caption_key] != want:
                        problems.append(
                            f"{where}{caption_key}: {v[caption_key]!r} is not the caption "
                            f"of {k} {sub} ({want!r})"
                        )
            if a.get("type") == "object_t":
                obj = raw["objects"].get(a.get("object_type"))
                if obj is None:
                    continue
                items = sub if isinstance(sub, list) else [sub]
                for i, item in enumerate(items):
                    suffix = f"[{i}]" if isinstance(sub, list) else ""
                    walk(obj, item, f"{where}{k}{suffix}.")

    walk(cls, value, path)


def check_line(obj):
    problems = []
    if not isinstance(obj, dict):
        return ["not a JSON object"]
    meta = obj.get("metadata")
    version = meta.get("version") if isinstance(meta, dict) else None
    if not isinstance(version, str):
        return ["metadata.version missing"]
    class_uid = obj.get("class_uid")
    if not isinstance(class_uid, int):
        return ["class_uid missing or not an integer"]
    profiles = meta.get("profiles", []) if isinstance(meta, dict) else []
    try:
        v, cls, raw = validator_of(version, class_uid, profiles if isinstance(profiles, list) else [])
    except ValueError as e:
        return [str(e)]
    for err in sorted(v.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "(line)"
        msg = err.message
        if len(msg) > 300:
            msg = msg[:300] + "..."
        problems.append(f"{where}: {msg} [{err.validator}]")
    activity = obj.get("activity_id")
    if isinstance(activity, int) and obj.get("type_uid") != class_uid * 100 + activity:
        problems.append(
            f"type_uid {obj.get('type_uid')} is not class_uid*100 + activity_id "
            f"({class_uid * 100 + activity})"
        )
    if obj.get("category_uid") != cls.get("category_uid"):
        problems.append(
            f"category_uid {obj.get('category_uid')} is not the class's ({cls.get('category_uid')})"
        )
    check_captions(raw, cls, obj, "", problems)
    return problems


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    total = bad = 0
    versions = set()
    for name in argv[1:]:
        f = sys.stdin if name == "-" else open(name, encoding="utf-8")
        with f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                total += 1
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    problems = [f"not JSON: {e}"]
                else:
                    problems = check_line(obj)
                    if isinstance(obj, dict) and isinstance(obj.get("metadata"), dict):
                        versions.add(str(obj["metadata"].get("version")))
                if problems:
                    bad += 1
                    for p in problems:
                        print(f"{name}:{n}: {p}")
    vs = ", ".join(sorted(versions)) or "-"
    js = importlib.metadata.version("jsonschema")
    ojs = importlib.metadata.version("ocsf-json-schema")
    print(f"ocsf: {total - bad} of {total} lines valid (OCSF {vs}; jsonschema {js}, ocsf-json-schema {ojs})")
    return 0 if total > 0 and bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

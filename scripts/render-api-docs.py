#!/usr/bin/env python3
"""Renders src/api/openapi.yaml (Swagger 2.0) into docs/api.md.

    scripts/render-api-docs.py                 # writes docs/api.md
    scripts/render-api-docs.py --output FILE   # writes FILE ("-": stdout)
    scripts/render-api-docs.py --check         # renders to a temporary file and fails (exit 1,
                                               # with a diff) if docs/api.md differs

The output depends only on the YAML file: paths and definitions are sorted, methods come in a
fixed order, and nothing (dates, host names) comes from the environment. Needs python3-yaml only.
"""

import argparse
import difflib
import json
import os
import sys
import tempfile

import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
SPEC = os.path.join(ROOT, "src", "api", "openapi.yaml")
OUTPUT = os.path.join(ROOT, "docs", "api.md")
METHODS = ("get", "put", "patch", "post", "delete")
SOCKET = "/tmp/vm0.sock"


# --- small text helpers ---------------------------------------------------------------------

def cell(text):
    """Text fit for one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n\n", "<br>").replace("\n", " ").strip()


def code(value):
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`"


def anchor_def(name):
    return "def-" + name.lower()


def anchor_op(method, path):
    slug = "".join(c if c.isalnum() else "-" for c in path.lower()).strip("-")
    return f"op-{method}-{slug or 'root'}"


def shell_quote(text):
    return "'" + text.replace("'", "'\\''") + "'"


def ref_name(schema):
    return schema["$ref"].split("/")[-1]


# --- schema helpers ---------------------------------------------------------------------------

class Spec:
    def __init__(self, data):
        self.data = data
        self.defs = data.get("definitions", {})

    def merged(self, schema):
        """An object schema with allOf parts folded in: (properties, required, base, extra)."""
        props, required, base = {}, [], None
        parts = [schema]
        seen = 0
        while parts and seen < 64:
            seen += 1
            part = parts.pop(0)
            if "$ref" in part:
                base = base or ref_name(part)
                parts.insert(0, self.defs[ref_name(part)])
                continue
            for name, sub in part.get("properties", {}).items():
                props.setdefault(name, sub)
            for name in part.get("required", []):
                if name not in required:
                    required.append(name)
            parts[0:0] = part.get("allOf", [])
        return props, required, base

    def type_of(self, schema):
        """A short Markdown type: `string`, [Drive](#def-drive), array of ..., with nullability."""
        text = self._type(schema)
        if schema.get("x-nullable"):
            text += " or null"
        return text

    def _type(self, schema):
        if "$ref" in schema:
            name = ref_name(schema)
            return f"[{name}](#{anchor_def(name)})"
        all_of = schema.get("allOf")
        if all_of and "type" not in schema:
            refs = [p for p in all_of if "$ref" in p]
            if refs:
                return self._type(refs[0])
        kind = schema.get("type")
        if kind == "array":
            return "array of " + self._type(schema.get("items", {}))
        if kind is None:
            return "any JSON value"
        if "format" in schema:
            return f"{kind} ({schema['format']})"
        return kind

    def notes(self, schema):
        """Constraints and defaults as a short sentence list."""
        out = []
        if "enum" in schema and len(schema["enum"]) == 1:
            out.append(f"Must be {code(schema['enum'][0])}.")
        elif "enum" in schema:
            out.append("One of " + ", ".join(code(v) for v in schema["enum"]) + ".")
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and hi is not None:
            out.append(f"From {lo} to {hi}.")
        elif lo is not None:
            out.append(f"At least {lo}.")
        elif hi is not None:
            out.append(f"At most {hi}.")
        if "minProperties" in schema:
            out.append(f"At least {schema['minProperties']} field(s).")
        if "pattern" in schema and schema.get("type") == "string" and len(schema["pattern"]) < 60:
            out.append(f"Pattern {code(schema['pattern'])}.")
        if "default" in schema:
            out.append(f"Default {code(schema['default'])}.")
        if schema.get("x-vessel-extension"):
            out.append("*Vessel extension.*")
        values = schema.get("x-enum-descriptions")
        if values:
            for value, info in values.items():
                mark = " *(Vessel extension)*" if info.get("x-vessel-extension") else ""
                out.append(f"\n\n{code(value)}{mark}: {info.get('description', '').strip()}")
        return out

    def field_rows(self, schema):
        """Table rows (field, type, required, description) of an object schema."""
        props, required, _ = self.merged(schema)
        rows = []
        for name, sub in props.items():
            described = sub
            if "description" not in sub and "$ref" in sub:
                described = self.defs[ref_name(sub)]
            text = [described.get("description", "").strip()] + self.notes(described)
            rows.append((f"`{name}`", self.type_of(sub), "yes" if name in required else "no",
                         " ".join(t for t in text if t)))
        return rows

    def example_of(self, schema, depth=0):
        """An example value for a schema: its own `example`, its definition's, or one built from
        the examples of its required fields and of the fields that have one."""
        if depth > 8:
            return None
        if "example" in schema:
            return schema["example"]
        if "$ref" in schema:
            return self.example_of(self.defs[ref_name(schema)], depth + 1)
        if schema.get("allOf"):
            return self.example_of(schema["allOf"][0], depth + 1)
        if schema.get("type") == "object" or "properties" in schema:
            props, required, _ = self.merged(schema)
            out = {}
            for name, sub in props.items():
                value = self.example_of(sub, depth + 1)
                if value is not None and (name in required or "example" in sub):
                    out[name] = value
            return out
        if schema.get("type") == "array":
            item = self.example_of(schema.get("items", {}), depth + 1)
            return [] if item is None else [item]
        if "enum" in schema:
            return schema["enum"][0]
        if "default" in schema:
            return schema["default"]
        return None


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(cell(c) for c in row) + " |")
    return out


# --- rendering ------------------------------------------------------------------------------

def operations(data):
    for path in sorted(data.get("paths", {})):
        item = data["paths"][path]
        for method in METHODS:
            if method in item:
                yield path, method, item


def parameters(item, op):
    by_key = {}
    for p in item.get("parameters", []) + op.get("parameters", []):
        by_key[(p["name"], p["in"])] = p
    return list(by_key.values())


def curl_example(spec, path, method, params):
    url_path = path
    query = []
    headers = []
    body = None
    for p in params:
        if p["in"] == "path":
            url_path = url_path.replace("{" + p["name"] + "}", str(p.get("x-example", p["name"])))
        elif p["in"] == "query" and "x-example" in p:
            query.append(f"{p['name']}={p['x-example']}")
        elif p["in"] == "header" and "x-example" in p:
            headers.append(f"{p['name']}: {p['x-example']}")
        elif p["in"] == "body":
            body = spec.example_of(p["schema"])
    url = "http://localhost" + url_path + ("?" + "&".join(query) if query else "")
    lines = [f"curl --unix-socket {SOCKET} -i \\"]
    lines.append(f"    {shell_quote(url)}" if method == "get" else f"    -X {method.upper()} {shell_quote(url)}")
    for h in headers:
        lines[-1] += " \\"
        lines.append(f"    -H {shell_quote(h)}")
    if body is not None:
        lines[-1] += " \\"
        lines.append("    -H 'Content-Type: application/json' \\")
        lines.append("    -d " + shell_quote(json.dumps(body, indent=4)))
    return lines


def response_schema_text(spec, schema):
    if schema is None:
        return "no body"
    text = spec.type_of(schema)
    props, required, base = spec.merged(schema) if ("$ref" in schema or "allOf" in schema) else ({}, [], None)
    if "allOf" in schema and base:
        base_required = spec.defs[base].get("required", [])
        extra = [r for r in required if r not in base_required]
        if extra:
            text += "; answers always carry " + ", ".join(code(r) for r in extra)
    if schema.get("type") == "string" and "pattern" in schema:
        text += " (Prometheus text format)"
    return text


def render_operation(spec, path, method, item):
    op = item[method]
    out = [f'<a id="{anchor_op(method, path)}"></a>', "", f"### `{method.upper()} {path}`", ""]
    if op.get("x-vessel-extension"):
        out += ["*Vessel extension.*", ""]
    out += [f"**{op.get('summary', '').strip()}**", ""]
    if op.get("description"):
        out += [op["description"].strip(), ""]
    params = parameters(item, op)
    simple = [p for p in params if p["in"] != "body"]
    if simple:
        out += ["**Parameters**", ""]
        rows = []
        for p in simple:
            text = [p.get("description", "").strip()] + spec.notes(p)
            rows.append((f"`{p['name']}`", p["in"], p.get("type", ""), "yes" if p.get("required") else "no",
                         " ".join(t for t in text if t)))
        out += table(["Name", "In", "Type", "Required", "Description"], rows) + [""]
    body = [p for p in params if p["in"] == "body"]
    if body:
        schema = body[0]["schema"]
        out += [f"**Request body** ({spec.type_of(schema)}, application/json)", ""]
        if "$ref" in schema or schema.get("type") == "object":
            target = spec.defs[ref_name(schema)] if "$ref" in schema else schema
            rows = spec.field_rows(schema)
            if rows:
                out += table(["Field", "Type", "Required", "Description"], rows)
                if target.get("additionalProperties") is False:
                    out += ["", "Other fields are refused."]
                out += [""]
            elif target.get("description"):
                out += [target["description"].strip(), ""]
        elif "$ref" not in schema and schema.get("description"):
            out += [schema["description"].strip(), ""]
    out += ["**Responses**", ""]
    rows = []
    responses = sorted(op["responses"].items(), key=lambda kv: str(kv[0]))
    for status, resp in responses:
        rows.append((str(status), resp.get("description", "").strip(), response_schema_text(spec, resp.get("schema"))))
    out += table(["Status", "Meaning", "Body"], rows) + [""]
    for status, resp in responses:
        for media, example in sorted(resp.get("examples", {}).items()):
            out += [f"Example {status} answer ({media}):", ""]
            if media == "application/json":
                out += ["```json", json.dumps(example, indent=2), "```", ""]
            else:
                out += ["```", str(example).rstrip("\n"), "```", ""]
    out += ["**Example**", "", "```sh"] + curl_example(spec, path, method, params) + ["```", ""]
    return out


def render_definition(spec, name, schema):
    out = [f'<a id="{anchor_def(name)}"></a>', "", f"### {name}", ""]
    if schema.get("x-vessel-extension"):
        out += ["*Vessel extension.*", ""]
    if schema.get("description"):
        out += [schema["description"].strip(), ""]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        rows = spec.field_rows(schema)
        if rows:
            out += table(["Field", "Type", "Required", "Description"], rows) + [""]
        extras = []
        if schema.get("additionalProperties") is False:
            extras.append("No other fields.")
        elif schema.get("additionalProperties") is True:
            extras.append("Any fields.")
        if schema.get("x-ordered-keys"):
            extras.append("Answers list the fields in this order.")
        if schema.get("minProperties"):
            extras.append(f"At least {schema['minProperties']} field(s).")
        if extras:
            out += [" ".join(extras), ""]
    else:
        out += [f"Type: {spec.type_of(schema)}.", ""]
        notes = spec.notes(schema)
        if notes:
            out += [" ".join(notes), ""]
    if "example" in schema:
        out += ["Example:", "", "```json", json.dumps(schema["example"], indent=2), "```", ""]
    return out


def render(data):
    spec = Spec(data)
    info = data.get("info", {})
    out = [f"# {info.get('title', 'API')} reference", "",
           "<!-- Generated from src/api/openapi.yaml by scripts/render-api-docs.py: edit those, not this"
           " file. -->", "",
           "## Overview", "",
           f"API version {info.get('version', '?')}, following the Firecracker API "
           f"{info.get('x-firecracker-api-version', '?')}. The machine-readable description is "
           "[`src/api/openapi.yaml`](../src/api/openapi.yaml) (Swagger 2.0).", ""]
    out += [info.get("description", "").strip(), ""]
    out += ["The examples use curl against the socket of an instance started with "
            f"`vessel --api-sock {SOCKET}`; a 204 answer prints only its status line and headers.", ""]
    out += ["| Method | Path | Summary |", "|---|---|---|"]
    for path, method, item in operations(data):
        op = item[method]
        mark = " *(Vessel extension)*" if op.get("x-vessel-extension") else ""
        out.append(f"| {method.upper()} | [`{path}`](#{anchor_op(method, path)}) | "
                   f"{cell(op.get('summary', '').strip())}{mark} |")
    out += ["", "## Endpoints", ""]
    for path, method, item in operations(data):
        out += render_operation(spec, path, method, item)
    out += ["## Definitions", ""]
    for name in sorted(spec.defs):
        out += render_definition(spec, name, spec.defs[name])
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=SPEC, help="the Swagger file (default: src/api/openapi.yaml)")
    parser.add_argument("--output", default=OUTPUT, help="where to write (default: docs/api.md; - for stdout)")
    parser.add_argument("--check", action="store_true",
                        help="render to a temporary file and fail if --output differs from it")
    args = parser.parse_args()
    with open(args.spec, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    text = render(data)
    if args.check:
        with tempfile.NamedTemporaryFile("w", suffix=".md", encoding="utf-8", delete=False) as tmp:
            tmp.write(text)
            rendered = tmp.name
        try:
            with open(rendered, encoding="utf-8") as f:
                fresh = f.read()
            try:
                with open(args.output, encoding="utf-8") as f:
                    current = f.read()
            except FileNotFoundError:
                current = ""
        finally:
            os.unlink(rendered)
        if fresh != current:
            diff = difflib.unified_diff(current.splitlines(True), fresh.splitlines(True),
                                        fromfile=args.output, tofile="rendered from " + args.spec, n=2)
            sys.stdout.writelines(list(diff)[:200])
            print(f"\n{args.output} is out of date: run scripts/render-api-docs.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    if args.output == "-":
        sys.stdout.write(text)
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

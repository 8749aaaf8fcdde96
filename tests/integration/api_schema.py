"""Checks Vessel API answers against src/api/openapi.yaml.

    from api_schema import ApiSchema
    api = ApiSchema()
    api.validate("GET", "/vm/config", 200, body_bytes, "application/json")

validate() raises AssertionError, with a message naming the request and the problem, when the
method and path are not in the file, the status is not one of the operation's documented
responses, the Content-Type is not the documented one, or the body does not match the response's
schema. Swagger 2.0 schemas are turned into JSON Schema (draft 4) for python3-jsonschema:
`$ref`s resolve into the file's definitions and `x-nullable: true` also allows null. A response
without a schema (204, 101) must have an empty body; a 204 must also have no Content-Type. When
the answer's definition says `x-ordered-keys: true`, its keys must come in the order the
definition lists them.

Needs only python3-yaml and python3-jsonschema (Debian packages).
"""

import copy
import json
import os
import re

import jsonschema
import yaml

DEFAULT_SPEC = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "api", "openapi.yaml"))

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")

# Schema keys that are Swagger-only annotations: dropped when converting to JSON Schema.
_ANNOTATIONS = {"example", "discriminator", "readOnly", "xml", "externalDocs"}


def _media_type(content_type):
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def _unique_pairs(pairs):
    """json object_pairs_hook: keep key order (dicts do) and refuse duplicate keys."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _json_path(path):
    text = "$"
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def to_json_schema(node):
    """One Swagger 2.0 schema object → the JSON Schema (draft 4) equivalent.

    `$ref`s are kept ("#/definitions/X"): the caller puts the converted definitions at the root.
    """
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-") or key in _ANNOTATIONS:
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        elif key == "allOf":
            out[key] = [to_json_schema(sub) for sub in value]
        else:
            out[key] = copy.deepcopy(value)
    if node.get("x-nullable") is True:
        return {"anyOf": [{"type": "null"}, out]}
    return out


class ApiSchema:
    """The API description, and checks of real answers against it."""

    def __init__(self, path=DEFAULT_SPEC):
        self.path = path
        with open(path, encoding="utf-8") as f:
            self.spec = yaml.safe_load(f)
        self.definitions = self.spec.get("definitions", {})
        self._json_definitions = {name: to_json_schema(d) for name, d in self.definitions.items()}
        # Literal paths first, then templates with fewer parameters: /vm/config before /vm/{x}.
        routes = []
        for template in self.spec.get("paths", {}):
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            routes.append((template.count("{"), template, re.compile(pattern)))
        routes.sort(key=lambda r: (r[0], r[1]))
        self._routes = [(template, regex) for _, template, regex in routes]

    # --- lookups -----------------------------------------------------------------------------

    @staticmethod
    def normalize_path(path):
        """The path as the router sees it: no scheme/host, query or trailing '/'."""
        if path.startswith("http://"):
            slash = path.find("/", len("http://"))
            path = path[slash:] if slash >= 0 else "/"
        path = path.split("?", 1)[0].split("#", 1)[0]
        if not path.startswith("/"):
            path = "/" + path
        if len(path) > 1:
            path = path.rstrip("/") or "/"
        return path

    def match_path(self, path):
        """The path template (e.g. "/drives/{drive_id}") that `path` falls under, or None."""
        path = self.normalize_path(path)
        for template, regex in self._routes:
            if regex.match(path):
                return template
        return None

    def operation(self, method, path):
        """(template, operation object) for a request; AssertionError if undocumented."""
        template = self.match_path(path)
        if template is None:
            raise AssertionError(f"{method.upper()} {path}: the path is not in {self.path}")
        item = self.spec["paths"][template]
        op = item.get(method.lower())
        if op is None:
            documented = sorted(m.upper() for m in item if m in HTTP_METHODS)
            raise AssertionError(f"{method.upper()} {path}: {template} documents only {', '.join(documented)}, "
                                 f"not {method.upper()}")
        return template, op

    def response(self, method, path, status):
        """The response object documented for `status`; AssertionError if there is none."""
        template, op = self.operation(method, path)
        responses = {str(code): r for code, r in op["responses"].items()}
        if str(status) in responses:
            return responses[str(status)]
        if "default" in responses:
            return responses["default"]
        raise AssertionError(f"{method.upper()} {path}: status {status} is not documented for "
                             f"{method.upper()} {template} (documented: {', '.join(sorted(responses))})")

    def produces(self, method, path):
        _, op = self.operation(method, path)
        return [_media_type(t) for t in op.get("produces", self.spec.get("produces", ["application/json"]))]

    def resolve(self, schema):
        """Follows a top-level $ref (and a one-$ref allOf) to the definition it names."""
        seen = 0
        while isinstance(schema, dict) and seen < 32:
            seen += 1
            if "$ref" in schema:
                schema = self.definitions[schema["$ref"].split("/")[-1]]
            elif len(schema.get("allOf", [])) >= 1 and "$ref" in schema["allOf"][0] and "type" not in schema:
                schema = self.definitions[schema["allOf"][0]["$ref"].split("/")[-1]]
            else:
                break
        return schema

    def json_schema(self, schema):
        """A self-contained JSON Schema for a Swagger schema (definitions at the root)."""
        root = to_json_schema(schema)
        if not isinstance(root, dict):
            raise TypeError("a schema must be an object")
        root = dict(root)
        root["definitions"] = self._json_definitions
        return root

    # --- checks ------------------------------------------------------------------------------

    def check_instance(self, schema, instance, where="body"):
        """AssertionError listing every way `instance` fails `schema` (a Swagger schema)."""
        validator = jsonschema.Draft4Validator(self.json_schema(schema))
        problems = []
        for error in sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path]):
            message = error.message
            if error.context:
                # For a nullable value, the interesting failure is the non-null branch's.
                branches = [e for e in error.context if e.schema != {"type": "null"}]
                nullable = len(branches) < len(error.context)
                detail = jsonschema.exceptions.best_match(branches or error.context)
                message = detail.message + (" (null is also allowed)" if nullable else "")
                error = detail if nullable else error
            problems.append(f"at {_json_path(error.absolute_path)}: {message}")
        if problems:
            shown = problems[:12]
            more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
            raise AssertionError(f"{where} does not match the schema:\n  " + "\n  ".join(shown) + more)
        self._check_key_order(schema, instance, where)

    def _check_key_order(self, schema, instance, where):
        definition = self.resolve(schema)
        if not isinstance(instance, dict) or not isinstance(definition, dict):
            return
        if not definition.get("x-ordered-keys"):
            return
        order = list(definition.get("properties", {}))
        got = [k for k in instance if k in order]
        want = sorted(got, key=order.index)
        if got != want:
            raise AssertionError(f"{where}: keys are out of order: got {got}, the definition orders them {want}")

    def validate(self, method, path, status, body, content_type):
        """Checks one answer; returns the parsed body (JSON value, text, or None when empty)."""
        method = method.upper()
        if isinstance(body, str):
            body = body.encode("utf-8")
        body = body or b""
        what = f"{method} {path} -> {status}"
        response = self.response(method, path, status)
        schema = response.get("schema")
        media = _media_type(content_type)

        if int(status) == 204 or schema is None:
            if body:
                raise AssertionError(f"{what}: the answer must have no body, got {len(body)} bytes: {body[:200]!r}")
            if int(status) == 204 and media:
                raise AssertionError(f"{what}: a 204 answer must have no Content-Type, got {content_type!r}")
            return None

        produces = self.produces(method, path)
        resolved = self.resolve(schema)
        text_answer = isinstance(resolved, dict) and resolved.get("type") == "string" and "text/plain" in produces
        expected = "text/plain" if text_answer else "application/json"
        if media != expected:
            raise AssertionError(f"{what}: Content-Type is {content_type!r}, expected {expected}")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise AssertionError(f"{what}: the body is not UTF-8: {e}") from None
        if text_answer:
            value = text
        else:
            try:
                value = json.loads(text, object_pairs_hook=_unique_pairs)
            except ValueError as e:
                raise AssertionError(f"{what}: the body is not valid JSON ({e}): {text[:200]!r}") from None
        self.check_instance(schema, value, where=f"{what}: the body")
        return value

    def validate_error(self, status, body, content_type):
        """Checks an error answer that no documented operation covers (an unknown path, an
        HTTP-level failure): a 4xx/5xx status with an Error body. Returns the fault message."""
        what = f"error answer {status}"
        if not 400 <= int(status) <= 599:
            raise AssertionError(f"{what}: not an error status")
        if _media_type(content_type) != "application/json":
            raise AssertionError(f"{what}: Content-Type is {content_type!r}, expected application/json")
        if isinstance(body, str):
            body = body.encode("utf-8")
        try:
            value = json.loads(body.decode("utf-8"), object_pairs_hook=_unique_pairs)
        except ValueError as e:
            raise AssertionError(f"{what}: the body is not valid JSON ({e}): {body[:200]!r}") from None
        self.check_instance({"$ref": "#/definitions/Error"}, value, where=f"{what}: the body")
        return value["fault_message"]

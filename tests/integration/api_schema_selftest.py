#!/usr/bin/env python3
"""Self-test of src/api/openapi.yaml and of api_schema.ApiSchema.

Checks that the file is well-formed Swagger 2.0 (structure, every $ref resolves, every operation
has responses, path parameters match their templates, schemas use only Swagger 2.0 keywords),
that every example in it matches its own schema, that every resource src/api/router.cpp routes is
documented, and that ApiSchema.validate() accepts right answers and rejects wrong ones.
Runs without a VMM (ctest: api.schema_selftest).
"""

import json
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from api_schema import DEFAULT_SPEC, HTTP_METHODS, ApiSchema  # noqa: E402

# VESSEL_OPENAPI=FILE checks another copy of the file (e.g. while editing it).
SPEC = os.environ.get("VESSEL_OPENAPI", DEFAULT_SPEC)
ROUTER = os.path.join(os.path.dirname(DEFAULT_SPEC), "router.cpp")

# The keywords a Swagger 2.0 Schema Object may have (vendor extensions x-* aside).
SCHEMA_KEYS = {
    "$ref", "format", "title", "description", "default", "multipleOf", "maximum", "exclusiveMaximum",
    "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "maxProperties", "minProperties", "required", "enum", "type", "items", "allOf",
    "properties", "additionalProperties", "discriminator", "readOnly", "xml", "externalDocs", "example",
}
SCHEMA_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
PARAM_IN = {"query", "header", "path", "formData", "body"}
OPERATION_KEYS = {"tags", "summary", "description", "externalDocs", "operationId", "consumes", "produces",
                  "parameters", "responses", "schemes", "deprecated", "security"}
PATH_ITEM_KEYS = set(HTTP_METHODS) | {"parameters", "$ref"}
TOP_KEYS = {"swagger", "info", "host", "basePath", "schemes", "consumes", "produces", "paths", "definitions",
            "parameters", "responses", "securityDefinitions", "security", "tags", "externalDocs"}

J = "application/json"


def dumps(value):
    return json.dumps(value).encode()


INSTANCE_INFO = {"id": "oa", "state": "Not started", "vmm_version": "0.1.0", "app_name": "Vessel"}
MACHINE = {"vcpu_count": 1, "mem_size_mib": 128, "smt": False, "track_dirty_pages": False, "huge_pages": "None"}
VM_CONFIG = {
    "balloon": None, "drives": [], "boot-source": {"kernel_image_path": "", "initrd_path": None},
    "cpu-config": None, "logger": None, "machine-config": MACHINE, "metrics": None, "mmds-config": None,
    "network-interfaces": [], "vsock": None, "entropy": None,
}
DRIVE = {"drive_id": "rootfs", "partuuid": None, "is_root_device": True, "cache_type": "Unsafe",
         "is_read_only": False, "path_on_host": "/x.img",
         "rate_limiter": {"bandwidth": {"size": 1, "one_time_burst": 0, "refill_time": 100}, "ops": None},
         "io_engine": "Sync", "socket": None}
NET = {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02", "rx_rate_limiter": None,
       "tx_rate_limiter": None}
VM_INFO = {"id": "oa", "state": "Running", "engine": "soft", "vcpu_count": 1, "mem_size_mib": 128, "uptime_s": 1.5,
           "pid": 42, "api_socket": "/tmp/oa.sock", "vmm_version": "0.1.0", "cpu_time_s": 0.01,
           "console_output_bytes": 0, "instance_start_to_first_instruction_us": 10, "last_pause_us": 0,
           "last_resume_us": 0, "vcpus": [{"id": 0, "instructions": 1, "translations": 1, "exits": 3}],
           "drives": [{"id": "rootfs", "read_bytes": 0, "write_bytes": 0, "read_count": 0, "write_count": 0}],
           "network_interfaces": []}
FAULT = {"fault_message": "The requested operation is not supported before starting the microVM."}


def walk(node, where="$"):
    """Every (where, dict) in a YAML tree."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{where}[{i}]")


class SwaggerStructure(unittest.TestCase):
    """The file is Swagger 2.0 that generic tooling can read."""

    @classmethod
    def setUpClass(cls):
        cls.api = ApiSchema(SPEC)
        cls.spec = cls.api.spec

    def schemas(self):
        """Every schema object in the file, with where it is."""
        found = []

        def visit(schema, where):
            found.append((where, schema))
            for name, sub in schema.get("properties", {}).items():
                visit(sub, f"{where}/properties/{name}")
            if isinstance(schema.get("items"), dict):
                visit(schema["items"], f"{where}/items")
            if isinstance(schema.get("additionalProperties"), dict):
                visit(schema["additionalProperties"], f"{where}/additionalProperties")
            for i, sub in enumerate(schema.get("allOf", [])):
                visit(sub, f"{where}/allOf[{i}]")

        for name, schema in self.spec.get("definitions", {}).items():
            visit(schema, f"#/definitions/{name}")
        for path, item in self.spec["paths"].items():
            for method, op in item.items():
                if method not in HTTP_METHODS:
                    continue
                for p in op.get("parameters", []):
                    if p.get("in") == "body":
                        visit(p["schema"], f"{method.upper()} {path} body")
                for status, resp in op["responses"].items():
                    if "schema" in resp:
                        visit(resp["schema"], f"{method.upper()} {path} {status}")
        return found

    def test_top_level(self):
        self.assertEqual(self.spec.get("swagger"), "2.0")
        for key in self.spec:
            self.assertTrue(key in TOP_KEYS or key.startswith("x-"), f"unknown top-level key {key!r}")
        info = self.spec["info"]
        self.assertEqual(info.get("version"), "0.1.0")
        self.assertTrue(info.get("title"))
        self.assertIn("1.10", info.get("description", ""))
        self.assertIn("fault_message", info.get("description", ""))
        self.assertIsInstance(self.spec["paths"], dict)
        self.assertIsInstance(self.spec["definitions"], dict)

    def test_every_ref_resolves(self):
        for where, node in walk(self.spec):
            ref = node.get("$ref")
            if ref is None:
                continue
            self.assertIsInstance(ref, str, where)
            match = re.fullmatch(r"#/(definitions|parameters|responses)/([^/]+)", ref)
            self.assertTrue(match, f"{where}: $ref {ref!r} is not a local reference")
            self.assertIn(match.group(2), self.spec.get(match.group(1), {}), f"{where}: $ref {ref!r} does not resolve")
            extra = set(node) - {"$ref"}
            self.assertFalse(extra, f"{where}: $ref has siblings {sorted(extra)} (Swagger ignores them; use allOf)")

    def test_paths_and_operations(self):
        operation_ids = set()
        for path, item in self.spec["paths"].items():
            self.assertTrue(path.startswith("/"), path)
            for key in item:
                self.assertTrue(key in PATH_ITEM_KEYS or key.startswith("x-"), f"{path}: unknown key {key!r}")
            methods = [m for m in item if m in HTTP_METHODS]
            self.assertTrue(methods, f"{path} has no operation")
            template_params = set(re.findall(r"\{([^}]+)\}", path))
            for method in methods:
                op = item[method]
                where = f"{method.upper()} {path}"
                for key in op:
                    self.assertTrue(key in OPERATION_KEYS or key.startswith("x-"), f"{where}: unknown key {key!r}")
                self.assertTrue(op.get("summary"), f"{where} has no summary")
                self.assertTrue(op.get("operationId"), f"{where} has no operationId")
                self.assertNotIn(op["operationId"], operation_ids, f"{where}: operationId used twice")
                operation_ids.add(op["operationId"])
                responses = op.get("responses")
                self.assertTrue(responses, f"{where} has no responses")
                for status, resp in responses.items():
                    # Quoted in the YAML: JSON (and tools reading the file as JSON) has string keys.
                    self.assertIsInstance(status, str, f"{where}: status {status!r} must be a quoted string")
                    self.assertTrue(status == "default" or re.fullmatch(r"[1-5][0-9][0-9]", status),
                                    f"{where}: bad status {status!r}")
                    self.assertTrue(resp.get("description"), f"{where} {status}: no description")
                    if str(status) == "204":
                        self.assertNotIn("schema", resp, f"{where}: a 204 has no body")
                    if int(status.replace("default", "500")) >= 400:
                        self.assertEqual(resp.get("schema"), {"$ref": "#/definitions/Error"},
                                         f"{where} {status}: errors use the Error definition")
                params = item.get("parameters", []) + op.get("parameters", [])
                names = set()
                for p in params:
                    self.assertIn(p.get("in"), PARAM_IN, f"{where}: parameter {p.get('name')}")
                    self.assertTrue(p.get("name"), f"{where}: parameter without a name")
                    names.add((p["name"], p["in"]))
                    if p["in"] == "body":
                        self.assertIn("schema", p, f"{where}: body parameter without a schema")
                    else:
                        self.assertIn(p.get("type"), SCHEMA_TYPES - {"object"}, f"{where}: {p['name']} type")
                    if p["in"] == "path":
                        self.assertIs(p.get("required"), True, f"{where}: path parameter {p['name']} must be required")
                self.assertLessEqual(sum(1 for p in params if p["in"] == "body"), 1, f"{where}: two bodies")
                self.assertEqual({n for n, i in names if i == "path"}, template_params,
                                 f"{where}: path parameters do not match the template")
                if method in ("put", "patch"):
                    self.assertTrue(any(p["in"] == "body" for p in params), f"{where}: a PUT/PATCH takes a body")

    def test_schema_keywords(self):
        for where, schema in self.schemas():
            self.assertIsInstance(schema, dict, where)
            for key in schema:
                self.assertTrue(key in SCHEMA_KEYS or key.startswith("x-"),
                                f"{where}: {key!r} is not a Swagger 2.0 schema keyword")
            if "type" in schema:
                self.assertIn(schema["type"], SCHEMA_TYPES, where)
            if schema.get("type") == "array":
                self.assertIsInstance(schema.get("items"), dict, f"{where}: an array needs items")
            if "x-nullable" in schema:
                self.assertIsInstance(schema["x-nullable"], bool, where)

    def test_required_fields_exist(self):
        spec = self.api
        for where, schema in self.schemas():
            required = schema.get("required")
            if not required:
                continue
            props = set(schema.get("properties", {}))
            if not props and "type" not in schema:
                continue  # a `required` refinement inside allOf: checked with its siblings below
            for name in required:
                self.assertIn(name, props, f"{where}: required field {name!r} is not a property")
        # allOf refinements: the required names must be properties of the referenced definition.
        for where, schema in self.schemas():
            parts = schema.get("allOf", [])
            known = set()
            for part in parts:
                known |= set(spec.resolve(part).get("properties", {})) if "$ref" in part else set(
                    part.get("properties", {}))
            for part in parts:
                for name in part.get("required", []):
                    self.assertIn(name, known, f"{where}: allOf requires unknown field {name!r}")

    def test_examples_match_their_schemas(self):
        checked = 0
        for where, schema in self.schemas():
            if "example" in schema:
                self.api.check_instance(schema, schema["example"], where=f"example of {where}")
                checked += 1
        for path, item in self.spec["paths"].items():
            for method, op in item.items():
                if method not in HTTP_METHODS:
                    continue
                for status, resp in op["responses"].items():
                    for media, example in resp.get("examples", {}).items():
                        body = dumps(example) if media == J else example.encode()
                        self.api.validate(method, path, status, body, media)
                        checked += 1
        self.assertGreater(checked, 40)

    def test_router_resources_are_documented(self):
        if not os.path.exists(ROUTER):
            self.skipTest(f"{ROUTER} not found")
        with open(ROUTER, encoding="utf-8") as f:
            source = f.read()
        resources = set(re.findall(r'resource == "([a-z0-9-]+)"', source))
        self.assertGreater(len(resources), 10, "could not read the router's resources")
        documented = {p.strip("/").split("/")[0] for p in self.spec["paths"]}
        missing = sorted(resources - documented)
        self.assertFalse(missing, f"router.cpp routes resources the YAML does not document: {missing}")

    def test_extensions_are_marked(self):
        paths = self.spec["paths"]
        for path in ("/vm/info", "/metrics", "/console"):
            self.assertIs(paths[path]["get"].get("x-vessel-extension"), True, f"GET {path}")
        actions = self.spec["definitions"]["InstanceActionInfo"]["properties"]["action_type"]
        for value in ("InstanceStop", "InstanceKill"):
            self.assertIn(value, actions["enum"])
            self.assertIs(actions["x-enum-descriptions"][value].get("x-vessel-extension"), True, value)
        for value in ("FlushMetrics", "InstanceStart", "SendCtrlAltDel"):
            self.assertFalse(actions["x-enum-descriptions"][value].get("x-vessel-extension"), value)
        self.assertIn("text/plain", paths["/metrics"]["get"]["produces"])
        self.assertIn("101", paths["/console"]["get"]["responses"])

    def test_unmodelled_paths_answer_400_only(self):
        paths = self.spec["paths"]
        for path, method in (("/cpu-config", "put"), ("/pmem/{id}", "put"), ("/hotplug/memory", "get"),
                             ("/hotplug/memory", "put"), ("/hotplug/memory", "patch")):
            op = paths[path][method]
            self.assertEqual([str(s) for s in op["responses"]], ["400"], f"{method.upper()} {path}")
            self.assertRegex(op["description"], r"does not (model|take)|has no|not implemented|cannot .* yet", f"{method.upper()} {path}")


class Validate(unittest.TestCase):
    """ApiSchema.validate() accepts right answers and rejects wrong ones."""

    @classmethod
    def setUpClass(cls):
        cls.api = ApiSchema(SPEC)

    def ok(self, method, path, status, body, content_type=J):
        return self.api.validate(method, path, status, body, content_type)

    def bad(self, method, path, status, body, content_type=J, message=None):
        with self.assertRaises(AssertionError) as caught:
            self.api.validate(method, path, status, body, content_type)
        if message:
            self.assertRegex(str(caught.exception), message)
        return str(caught.exception)

    def test_path_matching(self):
        self.assertEqual(self.api.match_path("/drives/rootfs"), "/drives/{drive_id}")
        self.assertEqual(self.api.match_path("/network-interfaces/eth0/"), "/network-interfaces/{iface_id}")
        self.assertEqual(self.api.match_path("/vm/config"), "/vm/config")
        self.assertEqual(self.api.match_path("/console?history=10"), "/console")
        self.assertEqual(self.api.match_path("http://localhost/version"), "/version")
        self.assertEqual(self.api.match_path("/"), "/")
        self.assertIsNone(self.api.match_path("/drives"))
        self.assertIsNone(self.api.match_path("/drives/a/b"))
        self.assertIsNone(self.api.match_path("/nonexistent"))

    def test_right_answers(self):
        self.assertEqual(self.ok("GET", "/", 200, dumps(INSTANCE_INFO))["app_name"], "Vessel")
        self.ok("GET", "/version", 200, b'{"firecracker_version":"1.10.0"}')
        self.ok("GET", "/machine-config", 200, dumps(MACHINE))
        self.ok("GET", "/vm/config", 200, dumps(VM_CONFIG))
        full = dict(VM_CONFIG, drives=[DRIVE], **{"network-interfaces": [NET]})
        full["balloon"] = {"amount_mib": 0, "deflate_on_oom": True, "stats_polling_interval_s": 0}
        full["vsock"] = {"guest_cid": 3, "uds_path": "/tmp/v.sock"}
        full["entropy"] = {"rate_limiter": None}
        full["mmds-config"] = {"version": "V2", "network_interfaces": ["eth0"], "ipv4_address": "169.254.169.254",
                               "imds_compat": False}
        full["boot-source"] = {"kernel_image_path": "/k", "initrd_path": "/i", "boot_args": "console=ttyS0"}
        self.ok("GET", "/vm/config", 200, dumps(full))
        self.ok("GET", "/vm/info", 200, dumps(VM_INFO))
        self.ok("GET", "/balloon/statistics", 200,
                b'{"target_pages":0,"actual_pages":0,"target_mib":0,"actual_mib":0,"free_memory":5}')
        self.ok("GET", "/mmds", 200, b"{}")
        self.ok("GET", "/mmds", 200, b'"a string is a JSON value too"')
        self.ok("GET", "/metrics", 200, b'a_total 1\nb{device="x",path="/drives/{drive_id}"} 2\n',
                "text/plain; version=0.0.4")
        self.ok("GET", "/console", 101, b"", None)
        self.assertIsNone(self.ok("PUT", "/actions", 204, b"", None))
        self.ok("PUT", "/drives/rootfs", 204, b"", "")
        self.ok("PATCH", "/vm", 400, dumps(FAULT))
        self.ok("PUT", "/mmds", 413, b'{"fault_message":"MMDS limit exceeded error: The MMDS patch request doesn\'t fit."}')
        self.ok("PUT", "/cpu-config", 400, b'{"fault_message":"Vessel does not take custom CPU templates."}')
        self.ok("GET", "/", 400, b'{"fault_message":"GET request cannot have a body."}')

    def test_instance_info_without_state(self):
        info = {k: v for k, v in INSTANCE_INFO.items() if k != "state"}
        self.bad("GET", "/", 200, dumps(info), message=r"'state' is a required property")

    def test_wrong_enum_values(self):
        self.bad("GET", "/", 200, dumps(dict(INSTANCE_INFO, state="Stopped")), message=r"'Stopped' is not one of")
        self.bad("GET", "/", 200, dumps(dict(INSTANCE_INFO, app_name="Firecracker")), message=r"not one of")
        self.bad("GET", "/machine-config", 200, dumps(dict(MACHINE, huge_pages="1G")), message=r"\$.huge_pages")
        self.bad("GET", "/vm/info", 200, dumps(dict(VM_INFO, engine="tcg")), message=r"\$.engine")

    def test_wrong_types_and_fields(self):
        self.bad("GET", "/machine-config", 200, dumps(dict(MACHINE, vcpu_count="1")), message=r"not of type 'integer'")
        self.bad("GET", "/machine-config", 200, dumps(dict(MACHINE, extra=1)), message=r"Additional properties")
        self.bad("GET", "/machine-config", 200, dumps({k: v for k, v in MACHINE.items() if k != "smt"}),
                 message=r"'smt' is a required property")
        self.bad("GET", "/vm/info", 200, dumps(dict(VM_INFO, vcpus=[{"id": 0}])), message=r"\$.vcpus\[0\]")
        drive = dict(DRIVE, partuuid=7)
        self.bad("GET", "/vm/config", 200, dumps(dict(VM_CONFIG, drives=[drive])), message=r"\$.drives\[0\].partuuid")
        drive = {k: v for k, v in DRIVE.items() if k != "socket"}
        self.bad("GET", "/vm/config", 200, dumps(dict(VM_CONFIG, drives=[drive])), message=r"'socket' is a required")
        self.bad("GET", "/vm/config", 200, dumps(dict(VM_CONFIG, vsock={"guest_cid": 3})), message=r"uds_path")
        self.bad("GET", "/vm/config", 200, dumps(dict(VM_CONFIG, balloon={"amount_mib": 1, "deflate_on_oom": True})),
                 message=r"stats_polling_interval_s")

    def test_nullable_only_where_documented(self):
        self.ok("GET", "/vm/config", 200, dumps(dict(VM_CONFIG, balloon=None)))
        self.bad("GET", "/vm/config", 200, dumps(dict(VM_CONFIG, drives=None)), message=r"\$.drives")
        self.bad("GET", "/vm/config", 200, dumps(dict(VM_CONFIG, **{"machine-config": None})),
                 message=r"machine-config")
        self.bad("GET", "/", 200, dumps(dict(INSTANCE_INFO, id=None)), message=r"\$.id")

    def test_key_order(self):
        shuffled = {k: INSTANCE_INFO[k] for k in ("app_name", "id", "state", "vmm_version")}
        self.bad("GET", "/", 200, dumps(shuffled), message=r"out of order")
        reordered = {"drives": [], **{k: v for k, v in VM_CONFIG.items() if k != "drives"}}
        self.bad("GET", "/vm/config", 200, dumps(reordered), message=r"out of order")

    def test_undocumented_status(self):
        self.bad("GET", "/", 404, dumps(FAULT), message=r"status 404 is not documented")
        self.bad("PUT", "/actions", 200, b"{}", message=r"status 200 is not documented")
        self.bad("PUT", "/hotplug/memory", 204, b"", None, message=r"status 204 is not documented")
        self.bad("PUT", "/mmds/config", 413, dumps(FAULT), message=r"status 413")

    def test_undocumented_path_or_method(self):
        self.bad("GET", "/nonexistent", 400, dumps(FAULT), message=r"path is not in")
        self.bad("DELETE", "/drives/rootfs", 400, dumps(FAULT), message=r"documents only PATCH, PUT")
        self.bad("GET", "/vm", 400, dumps(FAULT), message=r"documents only PATCH")
        self.bad("PUT", "/vm/info", 400, dumps(FAULT), message=r"documents only GET")

    def test_bodies_and_content_types(self):
        self.bad("PUT", "/actions", 204, b"{}", None, message=r"no body")
        self.bad("PUT", "/actions", 204, b"", J, message=r"no Content-Type")
        self.bad("GET", "/console", 101, b"x", None, message=r"no body")
        self.bad("GET", "/", 200, b"{not json", message=r"not valid JSON")
        self.bad("GET", "/", 200, b'{"id":"a","id":"b","state":"Running","vmm_version":"0","app_name":"Vessel"}',
                 message=r"duplicate key")
        self.bad("GET", "/", 200, dumps(INSTANCE_INFO), "text/plain", message=r"expected application/json")
        self.bad("GET", "/metrics", 200, b"a_total 1\n", J, message=r"expected text/plain")
        self.bad("GET", "/metrics", 200, b"this is not prometheus\n", "text/plain", message=r"does not match")
        self.bad("GET", "/vm/config", 400, b'{"error":"x"}', message=r"fault_message")
        self.bad("GET", "/vm/config", 400, b'{"fault_message":"x","extra":1}', message=r"Additional properties")
        self.bad("GET", "/", 200, b"\xff\xfe", message=r"not UTF-8")

    def test_validate_error(self):
        self.assertEqual(self.api.validate_error(400, dumps({"fault_message": "m"}), J), "m")
        with self.assertRaises(AssertionError):
            self.api.validate_error(200, dumps({"fault_message": "m"}), J)
        with self.assertRaises(AssertionError):
            self.api.validate_error(400, b'{ "error": "x" }', J)


if __name__ == "__main__":
    unittest.main(verbosity=1)

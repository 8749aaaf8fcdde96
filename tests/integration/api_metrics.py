#!/usr/bin/env python3
"""Metrics and logs as a Firecracker user meets them (and PUT /serial), plus the Prometheus endpoint. A VMM started
with --metrics-path and --log-path (Firecracker's flags) gets a VM through the API (a Multiboot
test guest on the soft engine that keeps the serial port busy, then waits): the metrics file gets
a line when the VM starts and one per FlushMetrics, each one compact JSON with Firecracker's groups
in Firecracker's order and counters that are the change since the previous line; PUT /metrics a
second time is refused as Firecracker refuses it; GET /metrics parses as Prometheus text (the
python3-prometheus-client parser) and its totals agree with the lines.

exit 0 pass, 1 fail, 77 skip
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vessel_api as va  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--guests", required=True)
args = parser.parse_args()
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    va.skip("no prometheus_client (Debian: python3-prometheus-client)")

GROUPS = ["utc_timestamp_ms", "api_server", "balloon", "block", "deprecated_api", "get_api_requests", "i8042", "uart",
          "latencies_us", "logger", "mmds", "net", "patch_api_requests", "put_api_requests", "seccomp", "vcpu", "vmm",
          "signals", "vsock", "entropy"]

work = tempfile.mkdtemp(prefix="vessel-metrics-")
sock = os.path.join(work, "api.sock")
metrics_path = os.path.join(work, "metrics.json")
log_path = os.path.join(work, "vessel.log")
open(log_path, "w").close()
vmm = va.Vmm(["--api-sock", sock, "--id", f"metrics-{os.getpid()}", "--engine", "soft", "--metrics-path", metrics_path,
              "--log-path", log_path, "--level", "Info", "--show-level"], sock, workdir=work, stdin=subprocess.PIPE)
try:
    va.check(vmm.ready(), "the API socket accepts connections")
    r = va.api(sock, "PUT", "/metrics", {"metrics_path": os.path.join(work, "other.json")})
    va.check(r.status == 400 and "Reinitialization of metrics not allowed." in (r.fault() or ""),
             f"metrics cannot be configured twice: {r}")
    for _ in range(3):
        va.api(sock, "GET", "/machine-config")
    serial_out = os.path.join(work, "serial.out")
    for path, body in [("/boot-source", {"kernel_image_path": os.path.join(args.guests, "echo.elf")}),
                       ("/serial", {"serial_out_path": serial_out}),
                       ("/actions", {"action_type": "InstanceStart"})]:
        r = va.api(sock, "PUT", path, body)
        va.check(r.status == 204, f"PUT {path}: {r}")
    va.check(vmm.wait_output("echo", 30), "the guest runs")
    vmm.proc.stdin.write(b"hello metrics\n")
    vmm.proc.stdin.flush()
    time.sleep(0.5)
    r = va.api(sock, "PUT", "/actions", {"action_type": "FlushMetrics"})
    va.check(r.status == 204, f"FlushMetrics after boot: {r}")
    time.sleep(0.2)
    r = va.api(sock, "PUT", "/actions", {"action_type": "FlushMetrics"})
    lines = [json.loads(line) for line in open(metrics_path).read().splitlines() if line]
    va.check(len(lines) == 3, f"a line at start and one per FlushMetrics ({len(lines)})")
    if lines:
        keys = [k for k in lines[0] if not k.startswith("block_") and not k.startswith("net_")]
        va.check(keys == GROUPS, f"Firecracker's groups in Firecracker's order: {keys}")
        va.check(abs(lines[-1]["utc_timestamp_ms"] / 1000 - time.time()) < 5, "utc_timestamp_ms is the wall clock")
    if len(lines) == 3:
        get_counts = [line["get_api_requests"]["machine_cfg_count"] for line in lines]
        va.check(get_counts == [3, 0, 0], f"counters are the change since the previous line: {get_counts}")
        uart_writes = [line["uart"]["write_count"] for line in lines]
        va.check(sum(uart_writes) > 0, f"the UART's bytes are counted: {uart_writes}")
        va.check(lines[1]["put_api_requests"]["actions_count"] == 1 and lines[2]["put_api_requests"]["actions_count"] == 1,
                 "each FlushMetrics counts in the next line")
    va.check(os.path.exists(serial_out) and "echo: ready" in open(serial_out, errors="replace").read(),
             "PUT /serial: the guest's serial output also goes to serial_out_path")
    prom = va.api(sock, "GET", "/metrics")
    va.check(prom.status == 200 and prom.headers.get("content-type", "").startswith("text/plain"), "GET /metrics")
    try:
        families = {f.name: f for f in text_string_to_metric_families(prom.body.decode())}
        va.check(True, f"GET /metrics parses as Prometheus text ({len(families)} families)")
    except Exception as e:  # noqa: BLE001
        families = {}
        va.check(False, f"GET /metrics parses as Prometheus text: {e}")
    fam = families.get("vessel_get_api_requests_machine_cfg_count")
    va.check(fam is not None and fam.type == "counter" and fam.samples[0].value == 3,
             "running totals: the machine-config GETs")
    fam = families.get("vessel_vcpu_instructions")
    va.check(fam is not None and fam.samples[0].value > 0, "guest instructions per vCPU (soft engine)")
    fam = families.get("vessel_api_requests")
    va.check(fam is not None and any(s.labels.get("path") == "/actions" for s in fam.samples),
             "API requests by path")
    log = open(log_path).read()
    va.check(":INFO] " in log and "started on the soft engine" in log, f"the log file has Firecracker-format lines: {log[:300]!r}")
    va.api(sock, "PUT", "/actions", {"action_type": "InstanceKill"})
    va.check(vmm.wait(30) is not None, "the VMM exits")
    lines = open(metrics_path).read().splitlines()
    va.check(len(lines) == 4, f"a last line at exit ({len(lines)})")
finally:
    if va._failures:
        vmm.dump()
    vmm.kill()
    shutil.rmtree(work, ignore_errors=True)
va.finish()

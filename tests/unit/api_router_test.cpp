// The API's request layer without a socket: routing, body validation with Firecracker's
// messages, pre-boot rules and the JSON answers, on a VMM that has not started a VM.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "api/json_body.h"
#include "api/router.h"
#include "vmm/console_mux.h"
#include "vmm/event_loop.h"
#include "vmm/metrics.h"
#include "vmm/vmm.h"

using namespace vessel;
using namespace vessel::api;

namespace {

class ApiRouterTest : public ::testing::Test {
protected:
    void SetUp() override
    {
        m_loop = EventLoop::create().release_value();
        m_console = std::make_unique<ConsoleMux>(*m_loop, ConsoleMux::Stdio::Ignore);
        m_vmm = std::make_unique<Vmm>(
            *m_loop, *m_console, m_metrics, Vmm::Options { "test-vm", EngineKind::Soft, nullptr, nullptr });
        m_router = std::make_unique<Router>(
            ApiContext { *m_vmm, m_metrics, *m_console, nullptr, "/tmp/x.sock", "0.1.0", {} });
        char tmpl[] = "/tmp/vessel-router-XXXXXX";
        m_dir = ::mkdtemp(tmpl);
        m_kernel = m_dir + "/vmlinux";
        m_image = m_dir + "/rootfs.img";
        for (auto* path : { &m_kernel, &m_image }) {
            int fd = ::open(path->c_str(), O_CREAT | O_WRONLY, 0644);
            ASSERT_GE(fd, 0);
            ASSERT_EQ(::ftruncate(fd, 1 << 20), 0);
            ::close(fd);
        }
    }

    void TearDown() override
    {
        m_router.reset();
        m_vmm.reset();
        m_console.reset();
        ::unlink(m_kernel.c_str());
        ::unlink(m_image.c_str());
        ::rmdir(m_dir.c_str());
    }

    HttpResponse call(const std::string& method, const std::string& path, const std::string& body = {})
    {
        HttpRequest r;
        r.method = method;
        r.path = path;
        r.body = body;
        return m_router->handle(r);
    }

    static std::string fault(const HttpResponse& r)
    {
        auto doc = nlohmann::json::parse(r.body, nullptr, false);
        if (!doc.is_object() || !doc.contains("fault_message"))
            return "<no fault_message: " + r.body + ">";
        return doc["fault_message"].get<std::string>();
    }

    std::unique_ptr<EventLoop> m_loop;
    std::unique_ptr<ConsoleMux> m_console;
    Metrics m_metrics;
    std::unique_ptr<Vmm> m_vmm;
    std::unique_ptr<Router> m_router;
    std::string m_dir, m_kernel, m_image;
};

} // namespace

TEST_F(ApiRouterTest, InstanceInfoAndVersion)
{
    auto r = call("GET", "/");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.body, R"({"id":"test-vm","state":"Not started","vmm_version":"0.1.0","app_name":"Vessel"})");
    r = call("GET", "/version");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.body, R"({"firecracker_version":"1.10.0"})");
}

TEST_F(ApiRouterTest, UnknownPathsAndMethodsNameTheFirstSegment)
{
    EXPECT_EQ(fault(call("GET", "/nope/deeper")), "Invalid request method and/or path: GET nope.");
    EXPECT_EQ(fault(call("DELETE", "/machine-config")), "Invalid request method and/or path: DELETE machine-config.");
    EXPECT_EQ(fault(call("PUT", "/vm", "{}")), "Invalid request method and/or path: PUT vm.");
    EXPECT_EQ(call("GET", "/vm").status, 400);
}

TEST_F(ApiRouterTest, BodyPresenceRules)
{
    EXPECT_EQ(fault(call("GET", "/", "{}")), "GET request cannot have a body.");
    EXPECT_EQ(fault(call("PUT", "/machine-config")), "Empty PUT request.");
    EXPECT_EQ(fault(call("PATCH", "/machine-config")), "Empty PATCH request.");
    EXPECT_EQ(fault(call("PATCH", "/machine-config", "{}")), "Empty PATCH request.");
}

TEST_F(ApiRouterTest, MachineConfigDefaultsUpdatesAndLimits)
{
    auto r = call("GET", "/machine-config");
    EXPECT_EQ(
        r.body, R"({"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None"})");
    EXPECT_EQ(call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256})").status, 204);
    EXPECT_EQ(call("PATCH", "/machine-config", R"({"mem_size_mib": 512})").status, 204);
    EXPECT_EQ(call("GET", "/machine-config").body,
        R"({"vcpu_count":2,"mem_size_mib":512,"smt":false,"track_dirty_pages":false,"huge_pages":"None"})");
    EXPECT_EQ(fault(call("PUT", "/machine-config", R"({"vcpu_count": 0, "mem_size_mib": 256})")),
        "Machine config error: The number of vCPUs must be greater than 0, less than 32 and must be 1 or an "
        "even number if SMT is enabled.");
    EXPECT_EQ(fault(call("PUT", "/machine-config", R"({"vcpu_count": 300, "mem_size_mib": 256})")),
        "An error occurred when deserializing the json body of a request: invalid value: integer `300`, "
        "expected u8.");
    EXPECT_EQ(fault(call("PUT", "/machine-config", R"({"vcpu_count": 2})")),
        "An error occurred when deserializing the json body of a request: missing field `mem_size_mib`.");
    EXPECT_EQ(fault(call("PUT", "/machine-config", R"({"vcpu_count": "2", "mem_size_mib": 1})")),
        "An error occurred when deserializing the json body of a request: invalid type: string \"2\", expected u8.");
    EXPECT_EQ(fault(call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 0})")),
        "Machine config error: The memory size (MiB) is either 0, or not a multiple of the configured page size.");
    // Refused updates change nothing.
    EXPECT_EQ(call("GET", "/machine-config").body,
        R"({"vcpu_count":2,"mem_size_mib":512,"smt":false,"track_dirty_pages":false,"huge_pages":"None"})");
}

TEST_F(ApiRouterTest, UnknownFieldsAreRefusedWithTheFieldList)
{
    EXPECT_EQ(fault(call("PUT", "/boot-source", R"({"kernel_image_path": "x", "kernel_args": "y"})")),
        "An error occurred when deserializing the json body of a request: unknown field `kernel_args`, "
        "expected one of `kernel_image_path`, `initrd_path`, `boot_args`.");
    EXPECT_EQ(fault(call("PATCH", "/vm", R"({"state": "Running"})")),
        "An error occurred when deserializing the json body of a request: unknown variant `Running`, "
        "expected `Paused` or `Resumed`.");
}

TEST_F(ApiRouterTest, MalformedJsonGetsSerdesWords)
{
    EXPECT_EQ(fault(call("PUT", "/machine-config", "invalid_payload")),
        "An error occurred when deserializing the json body of a request: expected value at line 1 column 1.");
    EXPECT_EQ(fault(call("PUT", "/machine-config", R"({"vcpu_count": 2)")),
        "An error occurred when deserializing the json body of a request: EOF while parsing an object at line "
        "1 column 16.");
    EXPECT_EQ(fault(call("PUT", "/machine-config", "{\"vcpu_count\": 2,\n}")),
        "An error occurred when deserializing the json body of a request: trailing comma at line 2 column 1.");
    EXPECT_EQ(fault(call("PUT", "/machine-config", R"({"vcpu_count": 2} x)")),
        "An error occurred when deserializing the json body of a request: trailing characters at line 1 column "
        "19.");
    EXPECT_EQ(fault(call("PUT", "/machine-config", "[1, 2]")),
        "An error occurred when deserializing the json body of a request: invalid type: sequence, expected "
        "struct MachineConfig.");
    std::string deep(200, '[');
    EXPECT_NE(fault(call("PUT", "/machine-config", deep)).find("recursion limit exceeded"), std::string::npos);
}

TEST_F(ApiRouterTest, BootSourceChecksTheFiles)
{
    EXPECT_EQ(fault(call("PUT", "/boot-source", R"({"kernel_image_path": "/nonexistent/vmlinux"})")),
        "Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)");
    EXPECT_EQ(
        call("PUT", "/boot-source", R"({"kernel_image_path": ")" + m_kernel + R"(", "boot_args": "quiet"})").status,
        204);
    auto cfg = nlohmann::json::parse(call("GET", "/vm/config").body);
    EXPECT_EQ(cfg["boot-source"]["kernel_image_path"], m_kernel);
    EXPECT_EQ(cfg["boot-source"]["boot_args"], "quiet");
}

TEST_F(ApiRouterTest, DrivesIdsRootAndRateLimiters)
{
    std::string drive = R"({"drive_id": "rootfs", "path_on_host": ")" + m_image +
        R"(", "is_root_device": true, "is_read_only": false,
        "rate_limiter": {"bandwidth": {"size": 10485760, "refill_time": 1000}}})";
    EXPECT_EQ(call("PUT", "/drives/rootfs", drive).status, 204);
    EXPECT_EQ(fault(call("PUT", "/drives/other", drive)), "The id from the path does not match the id from the body!");
    EXPECT_EQ(fault(call("PUT", "/drives/bad-id", drive)),
        "API Resource IDs can only contain alphanumeric characters and underscores.");
    EXPECT_EQ(fault(call("PUT", "/drives", drive)), "The ID cannot be empty.");
    std::string second
        = R"({"drive_id": "data", "path_on_host": ")" + m_image + R"(", "is_root_device": true, "is_read_only": true})";
    EXPECT_EQ(fault(call("PUT", "/drives/data", second)), "Drive config error: A root block device already exists!");
    EXPECT_EQ(fault(call("PATCH", "/drives/rootfs", R"({"drive_id": "rootfs"})")),
        "The requested operation is not supported before starting the microVM.");
    std::string missing
        = R"({"drive_id": "x", "path_on_host": "/nonexistent.img", "is_root_device": false, "is_read_only": true})";
    EXPECT_EQ(fault(call("PUT", "/drives/x", missing)),
        "Drive config error: Unable to create the virtio block device: Virtio backend error: Error manipulating "
        "the backing file: No such file or directory (os error 2) /nonexistent.img");
    auto cfg = nlohmann::json::parse(call("GET", "/vm/config").body);
    ASSERT_EQ(cfg["drives"].size(), 1u);
    EXPECT_EQ(cfg["drives"][0]["drive_id"], "rootfs");
    EXPECT_EQ(cfg["drives"][0]["rate_limiter"]["bandwidth"]["size"], 10485760);
    EXPECT_EQ(cfg["drives"][0]["rate_limiter"]["bandwidth"]["refill_time"], 1000);
    EXPECT_TRUE(cfg["drives"][0]["rate_limiter"]["ops"].is_null());
    // A bucket without its required fields is a body error.
    EXPECT_EQ(fault(call("PUT", "/drives/rootfs",
                  R"({"drive_id": "rootfs", "path_on_host": "x", "is_root_device": true, "is_read_only": false,
                             "rate_limiter": {"bandwidth": {"size": 1}}})")),
        "An error occurred when deserializing the json body of a request: missing field `refill_time`.");
}

TEST_F(ApiRouterTest, NetworkInterfaceMessages)
{
    EXPECT_EQ(fault(call("PUT", "/network-interfaces/eth0", R"({"iface_id": "eth1", "host_dev_name": "tap0"})")),
        "The id from the path [eth0] does not match the id from the body [eth1]!");
    EXPECT_EQ(fault(call("PUT", "/network-interfaces/eth0",
                  R"({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:AC:10:00"})")),
        "An error occurred when deserializing the json body of a request: The provided MAC address is invalid.");
}

TEST_F(ApiRouterTest, PostBootOnlyOperationsBeforeBoot)
{
    const char* msg = "The requested operation is not supported before starting the microVM.";
    EXPECT_EQ(fault(call("PATCH", "/vm", R"({"state": "Paused"})")), msg);
    EXPECT_EQ(fault(call("PUT", "/actions", R"({"action_type": "SendCtrlAltDel"})")), msg);
    EXPECT_EQ(fault(call("PUT", "/actions", R"({"action_type": "FlushMetrics"})")), msg);
    EXPECT_EQ(fault(call("PATCH", "/balloon", R"({"amount_mib": 1})")), msg);
    EXPECT_EQ(fault(call("GET", "/balloon/statistics")), msg);
    EXPECT_EQ(fault(call("PUT", "/actions", R"({"action_type": "InstanceStart"})")),
        "Start microvm error: Cannot start microvm without kernel configuration.");
}

TEST_F(ApiRouterTest, BalloonVsockEntropyAndLogger)
{
    EXPECT_EQ(fault(call("GET", "/balloon")), "Balloon config error: No balloon device found.");
    EXPECT_EQ(fault(call("PUT", "/balloon", R"({"amount_mib": 4096, "deflate_on_oom": true})")),
        "Balloon config error: Amount of pages requested is too large.");
    EXPECT_EQ(
        call("PUT", "/balloon", R"({"amount_mib": 64, "deflate_on_oom": true, "stats_polling_interval_s": 5})").status,
        204);
    EXPECT_EQ(call("GET", "/balloon").body, R"({"amount_mib":64,"deflate_on_oom":true,"stats_polling_interval_s":5})");
    EXPECT_EQ(call("PUT", "/vsock", R"({"guest_cid": 3, "uds_path": "/tmp/v.sock"})").status, 204);
    EXPECT_EQ(call("PUT", "/entropy", "{}").status, 204);
    EXPECT_EQ(fault(call("PUT", "/logger", R"({"level": "Loud"})")),
        "An error occurred when deserializing the json body of a request: Invalid LevelFilter.");
    auto cfg = nlohmann::json::parse(call("GET", "/vm/config").body);
    EXPECT_EQ(cfg["vsock"]["guest_cid"], 3);
    EXPECT_TRUE(cfg["entropy"].is_object());
    EXPECT_EQ(cfg["balloon"]["amount_mib"], 64);
}

TEST_F(ApiRouterTest, WhatVesselDoesNotModelSaysSo)
{
    for (auto [method, path] :
        { std::pair { "PUT", "/cpu-config" }, { "PUT", "/pmem/p0" }, { "PUT", "/hotplug/memory" } }) {
        auto r = call(method, path, "{}");
        EXPECT_EQ(r.status, 400) << path;
        EXPECT_NE(fault(r).find("Vessel"), std::string::npos) << path << ": " << fault(r);
    }
    EXPECT_EQ(fault(call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 256, "smt": true})")),
        "Machine config error: Vessel does not model simultaneous multithreading: smt must be false.");
}

TEST_F(ApiRouterTest, RequestsAreCountedUnderFirecrackersNames)
{
    call("GET", "/");
    call("GET", "/machine-config");
    call("PUT", "/machine-config", "oops");
    auto totals = m_metrics.totals();
    EXPECT_EQ(totals["get_api_requests"]["instance_info_count"], 1);
    EXPECT_EQ(totals["get_api_requests"]["machine_cfg_count"], 1);
    EXPECT_EQ(totals["put_api_requests"]["machine_cfg_count"], 1);
    EXPECT_EQ(totals["put_api_requests"]["machine_cfg_fails"], 1);
    // The metrics line reports changes: a second line right after shows zeros.
    auto first = nlohmann::json::parse(m_metrics.fc_line());
    auto second = nlohmann::json::parse(m_metrics.fc_line());
    EXPECT_EQ(first["get_api_requests"]["instance_info_count"], 1);
    EXPECT_EQ(second["get_api_requests"]["instance_info_count"], 0);
    EXPECT_NE(m_metrics.prometheus().find("vessel_get_api_requests_instance_info_count_total 1"), std::string::npos);
}

TEST(ApiJsonBody, ExpectedOneOfFollowsSerde)
{
    EXPECT_EQ(expected_one_of({ "a" }), "expected `a`");
    EXPECT_EQ(expected_one_of({ "a", "b" }), "expected `a` or `b`");
    EXPECT_EQ(expected_one_of({ "a", "b", "c" }), "expected one of `a`, `b`, `c`");
}

TEST(ApiJsonBody, SyntaxErrorsWithPositions)
{
    EXPECT_EQ(parse_json("").error().message(), "EOF while parsing a value at line 1 column 0");
    EXPECT_EQ(parse_json("{\"a\" 1}").error().message(), "expected `:` at line 1 column 6");
    EXPECT_EQ(parse_json("{1: 2}").error().message(), "key must be a string at line 1 column 2");
    EXPECT_EQ(parse_json("[1 2]").error().message(), "expected `,` or `]` at line 1 column 4");
    EXPECT_EQ(parse_json("\"abc").error().message(), "EOF while parsing a string at line 1 column 4");
    EXPECT_EQ(parse_json("tru").error().message(), "EOF while parsing a value at line 1 column 3");
    EXPECT_EQ(parse_json("nul!").error().message(), "expected ident at line 1 column 4");
    EXPECT_TRUE(parse_json(R"({"a": [1, 2.5e3, -0, true, false, null, "x\u00e9\n"]})").ok());
}

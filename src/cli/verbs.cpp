// vessel ls | info | pause | resume | stop | kill: each a request or two to a VM's API socket.
#include "cli/verbs.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "api/api_server.h"
#include "cli/api_client.h"
#include "cli/run_dir.h"

namespace vessel {

namespace {

int fail(const std::string& message)
{
    std::fprintf(stderr, "vessel: error: %s\n", message.c_str());
    return 1;
}

std::string human_duration(double seconds)
{
    auto s = static_cast<uint64_t>(seconds);
    if (s < 60)
        return fmt::format("{}s", s);
    if (s < 3600)
        return fmt::format("{}m{:02}s", s / 60, s % 60);
    if (s < 86400)
        return fmt::format("{}h{:02}m", s / 3600, (s % 3600) / 60);
    return fmt::format("{}d{:02}h", s / 86400, (s % 86400) / 3600);
}

std::string str(const nlohmann::json& j, const char* key)
{
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string("-");
}

uint64_t num(const nlohmann::json& j, const char* key)
{
    return j.contains(key) && j[key].is_number_unsigned() ? j[key].get<uint64_t>() : 0;
}

} // namespace

std::vector<nlohmann::json> collect_vm_infos()
{
    std::vector<nlohmann::json> out;
    for (auto& socket : list_vm_sockets()) {
        auto client = ApiClient::connect(socket);
        if (!client.ok())
            continue; // a VM that has exited (or is still starting)
        auto info = client->get_json("/vm/info");
        if (info.ok())
            out.push_back(info.value());
    }
    return out;
}

int command_ls(const CliOptions& o)
{
    auto infos = collect_vm_infos();
    if (o.json) {
        std::printf("%s\n", nlohmann::json(infos).dump(2).c_str());
        return 0;
    }
    std::printf("%-24s %-12s %-7s %5s %9s %10s %8s\n", "ID", "STATE", "ENGINE", "VCPUS", "MEMORY", "UPTIME", "PID");
    for (auto& i : infos) {
        std::printf("%-24s %-12s %-7s %5lu %6lu MiB %10s %8lu\n", str(i, "id").c_str(), str(i, "state").c_str(),
            str(i, "engine").c_str(), static_cast<unsigned long>(num(i, "vcpu_count")),
            static_cast<unsigned long>(num(i, "mem_size_mib")), human_duration(i.value("uptime_s", 0.0)).c_str(),
            static_cast<unsigned long>(num(i, "pid")));
    }
    return 0;
}

int command_info(const CliOptions& o)
{
    auto client = ApiClient::connect(o.target);
    if (!client.ok())
        return fail(client.error().message());
    auto info = client->get_json("/vm/info");
    if (!info.ok())
        return fail(info.error().message());
    if (o.json) {
        std::printf("%s\n", info->dump(2).c_str());
        return 0;
    }
    auto config = client->get_json("/vm/config");
    const auto& i = info.value();
    std::printf("id:            %s\n", str(i, "id").c_str());
    std::printf("state:         %s\n", str(i, "state").c_str());
    std::printf("engine:        %s\n", str(i, "engine").c_str());
    std::printf("vcpus:         %lu\n", static_cast<unsigned long>(num(i, "vcpu_count")));
    std::printf("memory:        %lu MiB\n", static_cast<unsigned long>(num(i, "mem_size_mib")));
    std::printf("uptime:        %s\n", human_duration(i.value("uptime_s", 0.0)).c_str());
    std::printf("pid:           %lu\n", static_cast<unsigned long>(num(i, "pid")));
    std::printf("api socket:    %s\n", str(i, "api_socket").c_str());
    std::printf("vmm cpu time:  %.2f s\n", i.value("cpu_time_s", 0.0));
    if (config.ok()) {
        const auto& c = config.value();
        if (c.contains("boot-source") && c["boot-source"].is_object()) {
            std::printf("kernel:        %s\n", str(c["boot-source"], "kernel_image_path").c_str());
            std::printf("cmdline:       %s\n", str(c["boot-source"], "boot_args").c_str());
        }
        for (auto& d : c.value("drives", nlohmann::json::array()))
            std::printf("drive %-8s %s%s%s\n", str(d, "drive_id").c_str(), str(d, "path_on_host").c_str(),
                d.value("is_read_only", false) ? " (read-only)" : "",
                d.value("is_root_device", false) ? " (root)" : "");
        for (auto& n : c.value("network-interfaces", nlohmann::json::array()))
            std::printf("net %-10s tap %s, mac %s\n", str(n, "iface_id").c_str(), str(n, "host_dev_name").c_str(),
                str(n, "guest_mac").c_str());
    }
    for (auto& v : i.value("vcpus", nlohmann::json::array())) {
        if (num(v, "instructions"))
            std::printf("vcpu %lu:        %lu guest instructions, %lu translations\n",
                static_cast<unsigned long>(num(v, "id")), static_cast<unsigned long>(num(v, "instructions")),
                static_cast<unsigned long>(num(v, "translations")));
        else
            std::printf("vcpu %lu:        %lu exits\n", static_cast<unsigned long>(num(v, "id")),
                static_cast<unsigned long>(num(v, "exits")));
    }
    for (auto& d : i.value("drives", nlohmann::json::array()))
        std::printf("drive %s:  read %lu bytes (%lu requests), written %lu bytes (%lu requests)\n",
            str(d, "id").c_str(), static_cast<unsigned long>(num(d, "read_bytes")),
            static_cast<unsigned long>(num(d, "read_count")), static_cast<unsigned long>(num(d, "write_bytes")),
            static_cast<unsigned long>(num(d, "write_count")));
    for (auto& n : i.value("network_interfaces", nlohmann::json::array()))
        std::printf("net %s:    rx %lu bytes (%lu frames), tx %lu bytes (%lu frames)\n", str(n, "id").c_str(),
            static_cast<unsigned long>(num(n, "rx_bytes")), static_cast<unsigned long>(num(n, "rx_packets")),
            static_cast<unsigned long>(num(n, "tx_bytes")), static_cast<unsigned long>(num(n, "tx_packets")));
    return 0;
}

int command_pause_resume(const CliOptions& o, bool pause)
{
    auto client = ApiClient::connect(o.target);
    if (!client.ok())
        return fail(client.error().message());
    auto r = client->expect_ok("PATCH", "/vm", pause ? R"({"state": "Paused"})" : R"({"state": "Resumed"})");
    if (!r.ok())
        return fail(r.error().message());
    return 0;
}

int command_stop(const CliOptions& o, bool kill)
{
    auto client = ApiClient::connect(o.target);
    if (!client.ok())
        return fail(client.error().message());
    std::string socket = client->socket_path();
    auto r = client->expect_ok(
        "PUT", "/actions", kill ? R"({"action_type": "InstanceKill"})" : R"({"action_type": "InstanceStop"})");
    if (!r.ok())
        return fail(r.error().message());
    // Done when nothing answers on the socket any more.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kill ? 10.0 : o.timeout_s);
    while (std::chrono::steady_clock::now() < deadline) {
        if (!api::unix_socket_is_live(socket))
            return 0;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return fail(kill ? fmt::format("{} still answers 10 s after being killed", o.target)
                     : fmt::format("{} did not shut down within {} s (the guest ignored Ctrl+Alt+Del?); `vessel kill "
                                   "{}` stops it at once",
                         o.target, o.timeout_s, o.target));
}

} // namespace vessel

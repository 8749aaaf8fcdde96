// vessel top: every running VM in a table refreshed every second: the VMM's CPU use, what its
// vCPUs did (guest instructions per second on the soft engine, exits per second on KVM), and
// disk and network throughput. On a terminal q (or Ctrl-C) quits; -n N refreshes N times.
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "cli/verbs.h"
#include "vmm/console.h"

namespace vessel {

namespace {

struct Sample {
    double wall { 0 };
    double cpu { 0 };
    uint64_t instructions { 0 };
    uint64_t exits { 0 };
    uint64_t disk_bytes { 0 };
    uint64_t net_bytes { 0 };
};

Sample sample_of(const nlohmann::json& info, double wall)
{
    Sample s;
    s.wall = wall;
    s.cpu = info.value("cpu_time_s", 0.0);
    for (auto& v : info.value("vcpus", nlohmann::json::array())) {
        s.instructions += v.value("instructions", uint64_t(0));
        s.exits += v.value("exits", uint64_t(0));
    }
    for (auto& d : info.value("drives", nlohmann::json::array()))
        s.disk_bytes += d.value("read_bytes", uint64_t(0)) + d.value("write_bytes", uint64_t(0));
    for (auto& n : info.value("network_interfaces", nlohmann::json::array()))
        s.net_bytes += n.value("rx_bytes", uint64_t(0)) + n.value("tx_bytes", uint64_t(0));
    return s;
}

std::string rate(double per_second, const char* unit)
{
    const char* prefixes[] = { "", "K", "M", "G", "T" };
    int i = 0;
    while (per_second >= 1000 && i < 4) {
        per_second /= 1000;
        ++i;
    }
    return fmt::format("{:.1f}{}{}", per_second, prefixes[i], unit);
}

} // namespace

int command_top(const CliOptions& o)
{
    bool tty = ::isatty(STDOUT_FILENO) && ::isatty(STDIN_FILENO);
    std::unique_ptr<Console> terminal;
    if (tty)
        terminal = std::make_unique<Console>();
    std::map<std::string, Sample> previous;
    auto start = std::chrono::steady_clock::now();
    for (int iteration = 0; o.iterations == 0 || iteration < o.iterations; ++iteration) {
        double now = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        auto infos = collect_vm_infos();
        std::string screen;
        if (tty)
            screen += "\x1b[H\x1b[2J";
        screen += fmt::format("vessel top - {} VM(s){}\r\n", infos.size(), tty ? "   (q quits)" : "");
        screen += fmt::format("{:<20} {:<8} {:<6} {:>5} {:>6} {:>12} {:>10} {:>11} {:>11}\r\n", "ID", "STATE", "ENGINE",
            "VCPUS", "CPU%", "INSTR/s", "EXITS/s", "DISK", "NET");
        std::map<std::string, Sample> current;
        for (auto& info : infos) {
            std::string id = info.value("id", std::string("-"));
            Sample s = sample_of(info, now);
            current[id] = s;
            std::string cpu = "-", ips = "-", eps = "-", disk = "-", net = "-";
            if (auto it = previous.find(id); it != previous.end() && s.wall > it->second.wall) {
                double dt = s.wall - it->second.wall;
                cpu = fmt::format("{:.0f}", 100.0 * (s.cpu - it->second.cpu) / dt);
                ips = rate(static_cast<double>(s.instructions - it->second.instructions) / dt, "");
                eps = rate(static_cast<double>(s.exits - it->second.exits) / dt, "");
                disk = rate(static_cast<double>(s.disk_bytes - it->second.disk_bytes) / dt, "B/s");
                net = rate(static_cast<double>(s.net_bytes - it->second.net_bytes) / dt, "B/s");
            }
            screen += fmt::format("{:<20} {:<8} {:<6} {:>5} {:>6} {:>12} {:>10} {:>11} {:>11}\r\n", id.substr(0, 20),
                info.value("state", std::string("-")).substr(0, 8), info.value("engine", std::string("-")),
                info.value("vcpu_count", 0), cpu, ips, eps, disk, net);
        }
        previous = std::move(current);
        if (!tty)
            std::erase(screen, '\r');
        std::fwrite(screen.data(), 1, screen.size(), stdout);
        std::fflush(stdout);
        if (o.iterations != 0 && iteration + 1 >= o.iterations)
            break;
        // Wait for the next refresh; on a terminal a key may end it.
        int wait_ms = static_cast<int>(o.interval_s * 1000);
        pollfd p { STDIN_FILENO, POLLIN, 0 };
        if (tty && ::poll(&p, 1, wait_ms) > 0) {
            char c = 0;
            if (::read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q' || c == 3))
                break;
        } else if (!tty) {
            ::usleep(static_cast<useconds_t>(wait_ms) * 1000);
        }
    }
    return 0;
}

} // namespace vessel

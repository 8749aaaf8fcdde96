#include "cli/options.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "arch/x86/layout.h"
#include "base/file.h"

namespace vessel {

namespace {

// The VM model's own limit: APIC ids are 8 bits in the MADT and MP table, and the IOAPIC takes
// the id after the last vCPU.
constexpr uint32_t kModelMaxVcpus = 254;
constexpr uint64_t kMaxConfigFileBytes = 1 << 20;

std::string resolve_path(const std::string& path, const std::string& base_dir)
{
    if (path.empty() || base_dir.empty() || std::filesystem::path(path).is_absolute())
        return path;
    return (std::filesystem::path(base_dir) / path).lexically_normal().string();
}

// "a,b=c,d" → [("a",""), ("b","c"), ("d","")]. A first element without '=' is `positional`'s value
// when `positional` is given (e.g. the disk path).
Result<std::vector<std::pair<std::string, std::string>>> split_spec(const std::string& text, const char* positional)
{
    std::vector<std::pair<std::string, std::string>> out;
    if (text.empty())
        return make_error("empty specification");
    size_t start = 0;
    bool first = true;
    while (start <= text.size()) {
        size_t comma = text.find(',', start);
        std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        if (item.empty())
            return make_error("empty item in '{}'", text);
        size_t eq = item.find('=');
        if (eq == std::string::npos) {
            if (first && positional)
                out.emplace_back(positional, item);
            else
                out.emplace_back(item, "");
        } else {
            out.emplace_back(item.substr(0, eq), item.substr(eq + 1));
        }
        first = false;
        if (comma == std::string::npos)
            break;
        start = comma + 1;
    }
    return out;
}

// A JSON device entry: a spec string, or an object whose keys are the spec's keys (true for
// flags such as "ro"), turned into the spec string.
Result<std::string> json_spec(const nlohmann::json& v)
{
    if (v.is_string())
        return v.get<std::string>();
    if (!v.is_object())
        return make_error("must be a string such as \"path,ro\" or an object");
    std::string spec;
    for (auto& [key, value] : v.items()) {
        std::string item;
        if (value.is_boolean()) {
            if (!value.get<bool>())
                continue;
            item = key;
        } else if (value.is_string()) {
            item = key + "=" + value.get<std::string>();
        } else if (value.is_number_unsigned()) {
            item = key + "=" + std::to_string(value.get<uint64_t>());
        } else {
            return make_error("\"{}\" must be a string, a number or true/false", key);
        }
        if (item.find(',') != std::string::npos)
            return make_error("\"{}\" must not contain a comma", key);
        spec += (spec.empty() ? "" : ",") + item;
    }
    return spec;
}

} // namespace

Result<std::array<uint8_t, 6>> parse_mac(const std::string& text)
{
    std::array<uint8_t, 6> mac {};
    unsigned b[6];
    char tail;
    if (text.size() != 17
        || std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5], &tail) != 6)
        return make_error("'{}' is not a MAC address like 52:54:00:12:34:56", text);
    for (int i = 0; i < 6; ++i)
        mac[i] = static_cast<uint8_t>(b[i]);
    if (mac[0] & 1)
        return make_error("'{}' is a multicast MAC address", text);
    return mac;
}

Result<DiskConfig> parse_disk_spec(const std::string& text)
{
    DiskConfig disk;
    for (auto& [key, value] : TRY(split_spec(text, "path"))) {
        if (key == "path")
            disk.path = value;
        else if ((key == "ro" || key == "readonly") && value.empty())
            disk.read_only = true;
        else if (key == "serial") {
            if (value.size() > 20)
                return make_error("serial '{}' is longer than 20 bytes", value);
            disk.serial = value;
        } else
            return make_error("unknown disk option '{}' (path[,ro][,serial=ID])", key);
    }
    if (disk.path.empty())
        return make_error("a disk needs an image path (path[,ro][,serial=ID])");
    return disk;
}

Result<NetConfig> parse_net_spec(const std::string& text)
{
    NetConfig net;
    for (auto& [key, value] : TRY(split_spec(text, nullptr))) {
        if (key == "tap") {
            if (value.empty() || value.size() > 15)
                return make_error("tap name '{}' must be 1 to 15 characters", value);
            net.tap = value;
        } else if (key == "mac") {
            net.mac = TRY(parse_mac(value));
        } else {
            return make_error("unknown net option '{}' (tap=NAME[,mac=MAC])", key);
        }
    }
    return net;
}

Result<VsockConfig> parse_vsock_spec(const std::string& text)
{
    VsockConfig vsock;
    bool have_cid = false;
    for (auto& [key, value] : TRY(split_spec(text, nullptr))) {
        if (key == "cid") {
            char* end = nullptr;
            unsigned long long cid = std::strtoull(value.c_str(), &end, 0);
            if (value.empty() || *end || cid < 3 || cid > UINT32_MAX - 1)
                return make_error("cid '{}' must be a number from 3 to {}", value, UINT32_MAX - 1);
            vsock.cid = static_cast<uint32_t>(cid);
            have_cid = true;
        } else if (key == "socket") {
            vsock.socket = value;
        } else {
            return make_error("unknown vsock option '{}' (cid=N,socket=PATH)", key);
        }
    }
    if (!have_cid || vsock.socket.empty())
        return make_error("vsock needs cid=N and socket=PATH");
    return vsock;
}

Result<ConsoleKind> parse_console(const std::string& text)
{
    if (text == "serial")
        return ConsoleKind::Serial;
    if (text == "virtio")
        return ConsoleKind::Virtio;
    return make_error("unknown console '{}' (choose serial or virtio)", text);
}

uint64_t host_memory_bytes()
{
    long pages = ::sysconf(_SC_PHYS_PAGES);
    long page_size = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page_size <= 0)
        return UINT64_MAX;
    return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
}

Result<EngineKind> parse_engine(const std::string& text)
{
    if (text == "auto")
        return EngineKind::Auto;
    if (text == "kvm")
        return EngineKind::Kvm;
    if (text == "soft")
        return EngineKind::Soft;
    return make_error("unknown engine '{}' (choose kvm, soft or auto)", text);
}

Result<BootPath> parse_boot_path(const std::string& text)
{
    if (text == "auto")
        return BootPath::Auto;
    if (text == "pvh")
        return BootPath::Pvh;
    if (text == "decompressor")
        return BootPath::Decompressor;
    return make_error("unknown boot path '{}' (choose auto, pvh or decompressor)", text);
}

Result<void> apply_json_config(
    VmConfig& config, const std::string& json_text, const std::string& origin, const std::string& base_dir)
{
    nlohmann::json doc = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded())
        return make_error("config '{}': not valid JSON", origin);
    if (!doc.is_object())
        return make_error("config '{}': the top level must be an object", origin);

    auto want_string = [&](const std::string& key, const nlohmann::json& v) -> Result<std::string> {
        if (!v.is_string())
            return make_error("config '{}': \"{}\" must be a string", origin, key);
        return v.get<std::string>();
    };
    for (auto& [key, value] : doc.items()) {
        if (key == "kernel") {
            config.kernel = resolve_path(TRY(want_string(key, value)), base_dir);
        } else if (key == "initrd") {
            config.initrd = resolve_path(TRY(want_string(key, value)), base_dir);
        } else if (key == "cmdline") {
            config.cmdline = TRY(want_string(key, value));
        } else if (key == "mem") {
            if (value.is_number_unsigned()) {
                config.mem_bytes = value.get<uint64_t>();
            } else if (value.is_string()) {
                auto size = parse_size(value.get<std::string>());
                if (!size.ok())
                    return make_error("config '{}': \"mem\": {}", origin, size.error().message());
                config.mem_bytes = size.value();
            } else {
                return make_error("config '{}': \"mem\" must be a size such as \"256M\" or a byte count", origin);
            }
        } else if (key == "cpus") {
            if (!value.is_number_unsigned() || value.get<uint64_t>() > UINT32_MAX)
                return make_error("config '{}': \"cpus\" must be a positive integer", origin);
            config.cpus = value.get<uint32_t>();
        } else if (key == "engine") {
            auto engine = parse_engine(TRY(want_string(key, value)));
            if (!engine.ok())
                return make_error("config '{}': \"engine\": {}", origin, engine.error().message());
            config.engine = engine.value();
        } else if (key == "boot") {
            auto boot = parse_boot_path(TRY(want_string(key, value)));
            if (!boot.ok())
                return make_error("config '{}': \"boot\": {}", origin, boot.error().message());
            config.boot = boot.value();
        } else if (key == "hugepages") {
            if (!value.is_boolean())
                return make_error("config '{}': \"hugepages\" must be true or false", origin);
            config.hugepages = value.get<bool>();
        } else if (key == "on_reset") {
            std::string action = TRY(want_string(key, value));
            if (action == "reboot")
                config.on_reset = ResetAction::Reboot;
            else if (action == "exit")
                config.on_reset = ResetAction::Exit;
            else
                return make_error("config '{}': \"on_reset\" must be \"reboot\" or \"exit\"", origin);
        } else if (key == "disks" || key == "net") {
            if (!value.is_array())
                return make_error("config '{}': \"{}\" must be a list", origin, key);
            if (key == "disks")
                config.disks.clear();
            else
                config.nets.clear();
            for (auto& item : value) {
                auto spec = json_spec(item);
                if (!spec.ok())
                    return make_error("config '{}': \"{}\": {}", origin, key, spec.error().message());
                if (key == "disks") {
                    auto disk = parse_disk_spec(spec.value());
                    if (!disk.ok())
                        return make_error("config '{}': \"disks\": {}", origin, disk.error().message());
                    disk.value().path = resolve_path(disk.value().path, base_dir);
                    config.disks.push_back(disk.value());
                } else {
                    auto net = parse_net_spec(spec.value());
                    if (!net.ok())
                        return make_error("config '{}': \"net\": {}", origin, net.error().message());
                    config.nets.push_back(net.value());
                }
            }
        } else if (key == "vsock") {
            auto spec = json_spec(value);
            auto vsock = spec.ok() ? parse_vsock_spec(spec.value()) : Result<VsockConfig>(spec.error());
            if (!vsock.ok())
                return make_error("config '{}': \"vsock\": {}", origin, vsock.error().message());
            vsock.value().socket = resolve_path(vsock.value().socket, base_dir);
            config.vsock = vsock.value();
        } else if (key == "balloon_target") {
            if (value.is_number_unsigned()) {
                config.balloon_target_bytes = value.get<uint64_t>();
            } else if (value.is_string()) {
                auto size = parse_size(value.get<std::string>());
                if (!size.ok())
                    return make_error("config '{}': \"balloon_target\": {}", origin, size.error().message());
                config.balloon_target_bytes = size.value();
            } else {
                return make_error(
                    "config '{}': \"balloon_target\" must be a size such as \"64M\" or a byte count", origin);
            }
            config.balloon = true;
        } else if (key == "rng" || key == "balloon") {
            if (!value.is_boolean())
                return make_error("config '{}': \"{}\" must be true or false", origin, key);
            (key == "rng" ? config.rng : config.balloon) = value.get<bool>();
        } else if (key == "console") {
            auto console = parse_console(TRY(want_string(key, value)));
            if (!console.ok())
                return make_error("config '{}': \"console\": {}", origin, console.error().message());
            config.console = console.value();
        } else {
            return make_error("config '{}': unknown key \"{}\"", origin, key);
        }
    }
    return {};
}

Result<void> validate_config(const VmConfig& config, uint32_t engine_max_vcpus)
{
    if (config.kernel.empty())
        return make_error("--kernel is required (or \"kernel\" in the config file)");
    if (config.mem_bytes < layout::kMinRam)
        return make_error(
            "--mem: {} MiB is below the minimum of {} MiB", config.mem_bytes >> 20, layout::kMinRam >> 20);
    uint64_t granule = config.hugepages ? 2 * layout::MiB : 4 * layout::KiB;
    if (config.mem_bytes % granule != 0)
        return make_error("--mem: {} bytes is not a multiple of {} KiB", config.mem_bytes, granule >> 10);
    uint64_t host = host_memory_bytes();
    if (config.mem_bytes > host)
        return make_error("--mem: {} MiB is more than this host's {} MiB of RAM", config.mem_bytes >> 20, host >> 20);
    if (config.cpus == 0)
        return make_error("--cpus: a VM needs at least 1 vCPU");
    uint32_t limit = std::min(kModelMaxVcpus, engine_max_vcpus);
    if (config.cpus > limit)
        return make_error("--cpus: {} vCPUs requested, but at most {} are possible here", config.cpus, limit);
    if (config.balloon_target_bytes % (4 * layout::KiB) != 0)
        return make_error("--balloon-target: {} bytes is not a multiple of 4 KiB", config.balloon_target_bytes);
    if (config.balloon_target_bytes >= config.mem_bytes)
        return make_error("--balloon-target: {} MiB is not below the guest's {} MiB of RAM",
            config.balloon_target_bytes >> 20, config.mem_bytes >> 20);
    if (config.cmdline.size() + 1 > layout::kCmdlineMax)
        return make_error(
            "--cmdline: {} bytes is longer than the {} bytes allowed", config.cmdline.size(), layout::kCmdlineMax - 1);
    return {};
}

} // namespace vessel

#include "cli/options.h"

#include <unistd.h>

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

} // namespace

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

Result<void> apply_json_config(VmConfig& config, const std::string& json_text, const std::string& origin,
                               const std::string& base_dir)
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
        return make_error("--mem: {} MiB is below the minimum of {} MiB", config.mem_bytes >> 20,
                          layout::kMinRam >> 20);
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
    if (config.cmdline.size() + 1 > layout::kCmdlineMax)
        return make_error("--cmdline: {} bytes is longer than the {} bytes allowed", config.cmdline.size(),
                          layout::kCmdlineMax - 1);
    return {};
}

Result<CliOptions> parse_command_line(int argc, const char* const* argv)
{
    CliOptions out;
    CLI::App app { "Vessel: a virtual machine monitor for x86-64 guests", "vessel" };
    app.require_subcommand(0, 1);
    app.set_version_flag("--version", "vessel 0.1.0");

    std::string log_level = "warn";
    app.add_option("--log-level", log_level, "Log verbosity: error, warn, info, debug, trace")
        ->check(CLI::IsMember({ "error", "warn", "info", "debug", "trace" }));

    CLI::App* run = app.add_subcommand("run", "Boot a VM and run it until the guest powers off");
    run->fallthrough(); // --log-level may follow the subcommand
    std::string kernel, initrd, cmdline, mem, engine, boot, config_path;
    uint32_t cpus = 0;
    bool no_reboot = false, hugepages = false;
    run->add_option("--kernel", kernel,
                    "Guest kernel: Linux bzImage, ELF vmlinux with a PVH note, or Multiboot 1 ELF");
    run->add_option("--initrd", initrd, "Initial ramdisk loaded next to the kernel");
    run->add_option("--cmdline", cmdline, "Kernel command line (default: console=ttyS0)");
    run->add_option("--mem", mem, "Guest RAM, e.g. 256M or 2G (default 256M, minimum 16M)");
    run->add_option("--cpus", cpus, "Number of vCPUs (default 1)");
    run->add_option("--engine", engine,
                    "CPU engine: kvm (hardware-assisted), soft (software), auto (kvm where it runs guest "
                    "kernels natively, else soft; default)");
    run->add_option("--boot", boot,
                    "bzImage boot path: auto (host-side decompression + PVH when possible), pvh, "
                    "decompressor (the kernel's own; default auto)");
    run->add_option("--config", config_path, "JSON file with the same settings (flags override it)");
    run->add_flag("--no-reboot", no_reboot, "Exit (status 0) when the guest resets instead of rebooting it");
    run->add_flag("--hugepages", hugepages, "Back guest RAM with 2 MiB huge pages");
    run->footer("Exit status: 0 after a clean power-off, (v << 1) | 1 after the guest writes v to the debug-exit "
                "port 0xf4, 2 after a triple fault, 1 on any error, 128+N on signal N.\n"
                "Console: the guest's COM1 is on stdin/stdout; with a terminal, Ctrl-A x quits.");

    app.add_subcommand("probe", "Print which CPU engine --engine auto chooses on this host, and why");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        out.command = Command::Help;
        out.help_text = app.help();
        if (run->parsed())
            out.help_text = run->help();
        return out;
    } catch (const CLI::CallForVersion&) {
        out.command = Command::Version;
        return out;
    } catch (const CLI::ParseError& e) {
        return make_error("{}", e.what());
    }
    out.log_level = log_level;

    if (app.got_subcommand("probe")) {
        out.command = Command::Probe;
        return out;
    }
    if (!run->parsed()) {
        out.command = Command::Help;
        out.help_text = app.help();
        return out;
    }
    out.command = Command::Run;
    VmConfig& vm = out.vm;

    if (!config_path.empty()) {
        auto text = read_file(config_path, kMaxConfigFileBytes);
        if (!text.ok())
            return make_error("--config: {}", text.error().message());
        std::string json(text.value().begin(), text.value().end());
        auto base = std::filesystem::path(config_path).parent_path().string();
        TRY(apply_json_config(vm, json, config_path, base));
    }
    if (run->count("--kernel"))
        vm.kernel = kernel;
    if (run->count("--initrd"))
        vm.initrd = initrd;
    if (run->count("--cmdline"))
        vm.cmdline = cmdline;
    if (run->count("--mem")) {
        auto size = parse_size(mem);
        if (!size.ok())
            return make_error("--mem: {}", size.error().message());
        vm.mem_bytes = size.value();
    }
    if (run->count("--cpus"))
        vm.cpus = cpus;
    if (run->count("--engine")) {
        auto kind = parse_engine(engine);
        if (!kind.ok())
            return make_error("--engine: {}", kind.error().message());
        vm.engine = kind.value();
    }
    if (run->count("--boot")) {
        auto path = parse_boot_path(boot);
        if (!path.ok())
            return make_error("--boot: {}", path.error().message());
        vm.boot = path.value();
    }
    if (no_reboot)
        vm.on_reset = ResetAction::Exit;
    if (hugepages)
        vm.hugepages = true;
    return out;
}

} // namespace vessel

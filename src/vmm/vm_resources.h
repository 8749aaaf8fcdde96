// The configuration of a VM before it starts, built up resource by resource through the API
// (Firecracker's VmResources): machine config, boot source, drives, network interfaces, vsock,
// balloon, entropy, serial, MMDS. Each setter checks what Firecracker checks and fails with
// Firecracker's message (prefixes included, e.g. "Drive config error: ..."), leaving the
// configuration unchanged. build() turns it into the VmConfig a Vm is made from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/result.h"
#include "vmm/vm_config.h"

namespace vessel {

// Firecracker's limit on vCPUs through the API (the VM model itself allows more with `vessel run`).
constexpr uint32_t kApiMaxVcpus = 32;
constexpr uint64_t kApiDefaultMemMib = 128;

struct MachineConfigUpdate {
    std::optional<uint32_t> vcpu_count;
    std::optional<uint64_t> mem_size_mib;
    std::optional<bool> smt;
    std::optional<bool> track_dirty_pages;
    std::optional<std::string> huge_pages; // None | 2M
    std::optional<std::string> cpu_template; // None (static templates are not modelled)
};

struct BootSourceConfig {
    std::string kernel_image_path;
    std::optional<std::string> initrd_path;
    std::optional<std::string> boot_args;
};

struct BalloonConfig {
    uint32_t amount_mib { 0 };
    bool deflate_on_oom { false };
    uint32_t stats_polling_interval_s { 0 };
};

class VmResources {
public:
    // Vessel's command line when boot_args is not given. Firecracker's default disables the
    // serial port and module loading (8250.nr_uarts=0 nomodule), which leaves a stock
    // distribution kernel without a console or its virtio drivers; ours keeps both.
    static constexpr const char* kDefaultCmdline = "console=ttyS0 reboot=k panic=1";

    VmResources();

    // Machine configuration (PUT replaces with defaults for absent optional fields, PATCH
    // changes only what it names; the caller turns the body into an update either way).
    Result<void> update_machine_config(const MachineConfigUpdate& update);
    uint32_t vcpu_count() const { return m_config.cpus; }
    uint64_t mem_size_mib() const { return m_config.mem_bytes >> 20; }
    bool smt() const { return false; }
    bool track_dirty_pages() const { return m_track_dirty_pages; }
    std::string huge_pages() const { return m_config.hugepages ? "2M" : "None"; }

    Result<void> set_boot_source(const BootSourceConfig& boot);
    const std::optional<BootSourceConfig>& boot_source() const { return m_boot_source; }

    // PUT /drives/{id}: insert or replace (root drives go first; only one root).
    Result<void> set_drive(const DiskConfig& drive);
    // PUT /network-interfaces/{id}: insert or replace; the tap is opened once to check it.
    Result<void> set_net(const NetConfig& net);
    Result<void> set_vsock(const VsockConfig& vsock);
    Result<void> set_balloon(const BalloonConfig& balloon);
    std::optional<BalloonConfig> balloon() const;
    Result<void> set_entropy(const std::optional<RateLimiterConfig>& limiter);
    Result<void> set_serial_out(const std::string& path);
    const std::string& serial_out_path() const { return m_serial_out; }
    Result<void> set_mmds_config(const MmdsConfig& mmds);

    // Whether anything that only a fresh VM can take (everything but logger and metrics) was
    // configured: a snapshot may only be loaded into an unconfigured VMM.
    bool boot_specific_configured() const { return m_boot_specific; }

    // The settings as a Vessel VmConfig for `vessel run` / --config-file style callers.
    const VmConfig& config() const { return m_config; }
    VmConfig& mutable_config() { return m_config; }

    // The VmConfig to boot: the command line gets root=/dev/vda (or PARTUUID) rw|ro for a root
    // drive, as Firecracker does. Fails as Firecracker's InstanceStart does without a kernel.
    Result<VmConfig> build() const;

private:
    VmConfig m_config;
    std::optional<BootSourceConfig> m_boot_source;
    bool m_track_dirty_pages { false };
    bool m_boot_specific { false };
    std::string m_serial_out;
};

} // namespace vessel

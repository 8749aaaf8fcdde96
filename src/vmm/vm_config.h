// Everything needed to build a VM, independent of where it came from (flags, JSON, API).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "devices/rate_limiter.h" // TokenBucketConfig, RateLimiterConfig
#include "engine/probe.h"
#include "loader/boot.h"

namespace vessel {

enum class ResetAction { Reboot, Exit };

// --disk path[,ro][,serial=ID]: a virtio-blk disk backed by a raw image file. The API's drives
// add an id, the root-device flag (which puts root=/dev/vda on the command line) and a limiter.
struct DiskConfig {
    std::string path;
    bool read_only { false };
    std::string serial; // the device's ID string (at most 20 bytes); default: the file's name
    std::string id; // API drive_id ("drive0", "drive1", ... for --disk)
    bool root { false };
    std::optional<std::string> partuuid;
    std::string cache_type { "Unsafe" }; // reported as given; FLUSH is always offered (see README)
    std::string io_engine { "Async" }; // Async: io_uring; Sync: synchronous calls on the I/O thread
    std::optional<RateLimiterConfig> rate_limiter;
};

// --net [tap=NAME][,mac=MAC]: a virtio-net device on a host tap device (created when no name).
struct NetConfig {
    std::string tap;
    std::optional<std::array<uint8_t, 6>> mac; // default: a locally administered one per device
    std::string id; // API iface_id ("net0", "net1", ... for --net)
    std::optional<RateLimiterConfig> rx_rate_limiter;
    std::optional<RateLimiterConfig> tx_rate_limiter;
};

// --vsock cid=N,socket=PATH: virtio-vsock; the host side is a Unix socket (Firecracker's design).
struct VsockConfig {
    uint32_t cid { 3 };
    std::string socket;
};

// PUT /mmds/config: which interfaces answer the metadata service, at which address, which version.
struct MmdsConfig {
    std::string version { "V1" }; // V1 | V2
    std::vector<std::string> network_interfaces;
    std::string ipv4_address { "169.254.169.254" };
    bool imds_compat { false };
};

// Where the VMM's stdin/stdout go: COM1 (default) or a virtio console (the guest's hvc0).
enum class ConsoleKind { Serial, Virtio };

struct VmConfig {
    std::string kernel;
    std::string initrd;
    std::string cmdline { "console=ttyS0" };
    uint64_t mem_bytes { 256ULL << 20 };
    uint32_t cpus { 1 };
    EngineKind engine { EngineKind::Auto };
    BootPath boot { BootPath::Auto };
    bool hugepages { false };
    ResetAction on_reset { ResetAction::Reboot };

    std::vector<DiskConfig> disks;
    std::vector<NetConfig> nets;
    std::optional<VsockConfig> vsock;
    bool rng { false };
    std::optional<RateLimiterConfig> rng_rate_limiter;
    bool balloon { false };
    uint64_t balloon_target_bytes { 0 }; // --balloon-target: memory the balloon takes from the guest at start
    bool balloon_deflate_on_oom { true };
    uint32_t balloon_stats_interval_s { 0 }; // 0: the host asks for statistics only when told to
    ConsoleKind console { ConsoleKind::Serial };
    std::optional<MmdsConfig> mmds;
    // Record the pages the guest writes from the start (diff snapshots, migration).
    bool track_dirty_pages { false };
};

} // namespace vessel

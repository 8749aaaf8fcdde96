// Everything needed to build a VM, independent of where it came from (flags, JSON, API).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/probe.h"
#include "loader/boot.h"

namespace vessel {

enum class ResetAction { Reboot, Exit };

// --disk path[,ro][,serial=ID]: a virtio-blk disk backed by a raw image file.
struct DiskConfig {
    std::string path;
    bool read_only { false };
    std::string serial; // the device's ID string (at most 20 bytes); default: the file's name
};

// --net [tap=NAME][,mac=MAC]: a virtio-net device on a host tap device (created when no name).
struct NetConfig {
    std::string tap;
    std::optional<std::array<uint8_t, 6>> mac; // default: a locally administered one per device
};

// --vsock cid=N,socket=PATH: virtio-vsock; the host side is a Unix socket (Firecracker's design).
struct VsockConfig {
    uint32_t cid { 3 };
    std::string socket;
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
    bool balloon { false };
    uint64_t balloon_target_bytes { 0 }; // --balloon-target: memory the balloon takes from the guest at start
    ConsoleKind console { ConsoleKind::Serial };
};

} // namespace vessel

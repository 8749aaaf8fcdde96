// Everything needed to build a VM, independent of where it came from (flags, JSON, API).
#pragma once

#include <cstdint>
#include <string>

#include "engine/probe.h"
#include "loader/boot.h"

namespace vessel {

enum class ResetAction { Reboot, Exit };

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
};

} // namespace vessel

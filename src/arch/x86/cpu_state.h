// The engine-neutral architectural state of one x86-64 vCPU. KVM converts to and from its
// ioctls; the software engine executes on it directly. Snapshots, migration and cross-engine
// restore all speak this struct.
#pragma once

#include <array>
#include <cstdint>

namespace vessel {

struct SegmentReg {
    uint64_t base { 0 };
    uint32_t limit { 0 };
    uint16_t selector { 0 };
    uint8_t type { 0 };   // 4-bit descriptor type
    uint8_t present { 0 };
    uint8_t dpl { 0 };
    uint8_t db { 0 };     // default operation size (D/B)
    uint8_t s { 0 };      // 1 = code/data, 0 = system
    uint8_t l { 0 };      // 64-bit code segment
    uint8_t g { 0 };      // granularity
    uint8_t avl { 0 };
    uint8_t unusable { 0 };
    bool operator==(const SegmentReg&) const = default;
};

struct DescriptorTableReg {
    uint64_t base { 0 };
    uint16_t limit { 0 };
    bool operator==(const DescriptorTableReg&) const = default;
};

enum Gpr : unsigned { RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8, R9, R10, R11, R12, R13, R14, R15 };

// MSRs carried in CpuState (the ones a Linux guest or our boot path depends on).
struct MsrState {
    uint64_t star { 0 }, lstar { 0 }, cstar { 0 }, sfmask { 0 };
    uint64_t kernel_gs_base { 0 };
    uint64_t sysenter_cs { 0 }, sysenter_esp { 0 }, sysenter_eip { 0 };
    uint64_t pat { 0x0007040600070406ULL };
    uint64_t tsc_aux { 0 };
    uint64_t tsc_deadline { 0 };
    uint64_t misc_enable { 1 }; // fast strings
    uint64_t kvm_system_time { 0 }, kvm_wall_clock { 0 };
    uint64_t spec_ctrl { 0 };
    bool operator==(const MsrState&) const = default;
};

// Events in flight at the instruction boundary where the state was taken.
struct PendingEvents {
    uint8_t exception_pending { 0 };
    uint8_t exception_injected { 0 };
    uint8_t exception_nr { 0 };
    uint8_t exception_has_error_code { 0 };
    uint32_t exception_error_code { 0 };
    uint8_t interrupt_injected { 0 };
    uint8_t interrupt_nr { 0 };
    uint8_t interrupt_shadow { 0 };
    uint8_t nmi_injected { 0 };
    uint8_t nmi_pending { 0 };
    uint8_t nmi_masked { 0 };
    uint8_t sipi_vector { 0 };
    bool operator==(const PendingEvents&) const = default;
};

enum class MpState : uint32_t {
    Runnable = 0,
    Uninitialized = 1, // AP waiting for INIT
    InitReceived = 2,  // AP waiting for SIPI
    Halted = 3,
};

struct CpuState {
    std::array<uint64_t, 16> gpr {};
    uint64_t rip { 0 };
    uint64_t rflags { 0x2 };

    SegmentReg cs, ds, es, fs, gs, ss, tr, ldtr;
    DescriptorTableReg gdt, idt;

    uint64_t cr0 { 0x60000010 }, cr2 { 0 }, cr3 { 0 }, cr4 { 0 }, cr8 { 0 };
    uint64_t efer { 0 };
    uint64_t apic_base { 0xfee00900 };
    uint64_t xcr0 { 1 };
    std::array<uint64_t, 4> dr {};
    uint64_t dr6 { 0xffff0ff0 }, dr7 { 0x400 };

    MsrState msrs;
    uint64_t tsc { 0 };

    // FXSAVE image (x87, MMX, SSE state and MXCSR), 512 bytes, and the XSAVE extended area.
    alignas(64) std::array<uint8_t, 4096> xsave {};

    // Local APIC register page (the architectural 1 KiB register layout).
    std::array<uint8_t, 1024> lapic {};

    PendingEvents events;
    MpState mp_state { MpState::Runnable };

    bool operator==(const CpuState&) const = default;
};

// Flags and control-register bits used across engines and loaders.
namespace x86 {
constexpr uint64_t kCr0Pe = 1ULL << 0;
constexpr uint64_t kCr0Mp = 1ULL << 1;
constexpr uint64_t kCr0Et = 1ULL << 4;
constexpr uint64_t kCr0Ne = 1ULL << 5;
constexpr uint64_t kCr0Wp = 1ULL << 16;
constexpr uint64_t kCr0Pg = 1ULL << 31;
constexpr uint64_t kCr4Pae = 1ULL << 5;
constexpr uint64_t kCr4Pge = 1ULL << 7;
constexpr uint64_t kCr4Osfxsr = 1ULL << 9;
constexpr uint64_t kCr4Osxmmexcpt = 1ULL << 10;
constexpr uint64_t kEferSce = 1ULL << 0;
constexpr uint64_t kEferLme = 1ULL << 8;
constexpr uint64_t kEferLma = 1ULL << 10;
constexpr uint64_t kEferNxe = 1ULL << 11;
constexpr uint64_t kRflagsIf = 1ULL << 9;
constexpr uint64_t kRflagsFixed = 1ULL << 1;
} // namespace x86

} // namespace vessel

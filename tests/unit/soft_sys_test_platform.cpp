// Stand-ins for the soft vCPU's platform hooks (platform.h) while the vCPU is not on this branch.
// Weak, so the real definitions win once the engine provides them.
#include "engine/soft/platform.h"

#include "soft_sys_test_support.h"

namespace vessel::soft {

namespace systest {
uint8_t g_cr8 = 0;
unsigned g_halts = 0;
} // namespace systest

[[gnu::weak]] uint64_t guest_tsc(Cpu& c) { return static_cast<uint64_t>(1'000'000 + c.tsc_offset); }
[[gnu::weak]] void set_guest_tsc(Cpu& c, uint64_t value) { c.tsc_offset = static_cast<int64_t>(value) - 1'000'000; }
[[gnu::weak]] uint64_t guest_tsc_khz() { return 2'500'000; }
[[gnu::weak]] bool lapic_read_msr(Cpu&, uint32_t, uint64_t&) { return false; }
[[gnu::weak]] bool lapic_write_msr(Cpu&, uint32_t, uint64_t) { return false; }
[[gnu::weak]] uint8_t get_cr8(Cpu&) { return systest::g_cr8; }
[[gnu::weak]] void set_cr8(Cpu&, uint8_t value) { systest::g_cr8 = value; }
[[gnu::weak]] void cpu_halt(Cpu& c)
{
    ++systest::g_halts;
    c.halted = true;
}

} // namespace vessel::soft

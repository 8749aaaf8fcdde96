// The ACPI VM Generation ID (Microsoft's "Virtual Machine Generation ID" spec, as in QEMU's
// vmgenid and Firecracker's): 16 random bytes at a fixed, e820-reserved guest-physical address
// (layout::kVmGenId) that the DSDT's \_SB.VGEN.ADDR reports. A guest that sees the ID change
// knows it runs from a copy of its memory (a restored snapshot, a clone) and reseeds its RNG.
// The change is announced by an interrupt to the Generic Event Device (\_SB.GED0), whose _EVT
// method notifies VGEN; Linux's vmgenid driver then re-reads the ID (add_vmfork_randomness).
//
// Not a bus device: the guest only reads RAM. The ID itself is saved with guest memory.
#pragma once

#include <array>
#include <cstdint>

#include "arch/x86/layout.h"
#include "base/result.h"
#include "devices/irq.h"
#include "memory/guest_memory.h"

namespace vessel {

class VmGenId {
public:
    using Id = std::array<uint8_t, layout::kVmGenIdSize>;

    struct State {
        Id id {};
        bool operator==(const State&) const = default;
    };

    // `irq` is the Generic Event Device's GSI (edge-triggered); `address` where the ID lives.
    explicit VmGenId(IrqLine irq, uint64_t address = layout::kVmGenId);

    // Writes a fresh random ID (getrandom, never equal to the previous one) at address() and
    // keeps it. The guest sees it at once, but only looks again when notify()'d.
    Result<void> write_new_id(GuestMemory& mem);
    // Tells the guest the ID changed: an edge (high, then low) on the GED's interrupt line.
    void notify() const;

    const Id& id() const { return m_id; }
    uint64_t address() const { return m_address; }
    uint32_t gsi() const { return m_irq.gsi(); }

    State save() const { return { m_id }; }
    void restore(const State& state) { m_id = state.id; }

private:
    IrqLine m_irq;
    uint64_t m_address;
    Id m_id {};
};

} // namespace vessel

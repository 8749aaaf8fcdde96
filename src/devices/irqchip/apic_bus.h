// The interrupt messages local APICs and the I/O APIC exchange (what the APIC bus / system bus
// carries), and the bus that routes them. Engine-neutral: the Irqchip implements the bus over
// its LAPIC models.
#pragma once

#include <cstdint>

namespace vessel {

enum class ApicDeliveryMode : uint8_t {
    Fixed = 0,
    LowestPriority = 1,
    Smi = 2,
    RemoteRead = 3, // obsolete; never delivered
    Nmi = 4,
    Init = 5,
    StartUp = 6,
    ExtInt = 7,
};

enum class ApicShorthand : uint8_t {
    None = 0,
    Self = 1,
    AllIncludingSelf = 2,
    AllExcludingSelf = 3,
};

struct ApicMessage {
    static constexpr uint32_t kBroadcast = 0xff; // physical broadcast / all logical ids
    static constexpr uint32_t kFromIoApic = 0xffffffff; // source_id of I/O APIC messages

    uint32_t dest { 0 }; // xAPIC destination (8 bits): APIC id or logical MDA
    bool logical { false }; // logical destination mode
    ApicDeliveryMode delivery_mode { ApicDeliveryMode::Fixed };
    uint8_t vector { 0 };
    bool level { true }; // ICR level (assert); INIT with !level && trigger_level = de-assert
    bool trigger_level { false }; // level-triggered (sets the TMR bit; EOI is broadcast)
    ApicShorthand shorthand { ApicShorthand::None };
    uint32_t source_id { kFromIoApic }; // sender's APIC id (needed for the Self / AllExcludingSelf shorthands)

    bool operator==(const ApicMessage&) const = default;
};

class ApicBus {
public:
    virtual ~ApicBus() = default;
    // Routes a message to every LAPIC it addresses (one of them for lowest priority). Any thread;
    // the caller must hold no LAPIC lock.
    virtual void deliver(const ApicMessage& message) = 0;
    // A LAPIC EOI'd a level-triggered vector: I/O APIC entries waiting on it (remote IRR) clear.
    virtual void broadcast_eoi(uint8_t vector) = 0;
};

} // namespace vessel

#include "arch/x86/mptable.h"

#include <cstddef>
#include <cstring>
#include <span>
#include <vector>

#include "arch/x86/layout.h"
#include "arch/x86/table_bytes.h"

namespace vessel {

namespace {

constexpr uint8_t kMpSpecRevision = 4; // MP spec 1.4
constexpr uint8_t kApicVersion = 0x14;
constexpr uint8_t kIoApicVersion = 0x11;
// Family 6, model 0, stepping 0; CPUID.1:EDX FPU (bit 0) and APIC (bit 9).
constexpr uint32_t kCpuSignature = 6u << 8;
constexpr uint32_t kCpuFeatures = (1u << 0) | (1u << 9);
constexpr uint8_t kIsaBusId = 0;
constexpr uint8_t kAllLocalApics = 0xff;
constexpr unsigned kIsaIrqs = 16;

struct [[gnu::packed]] MpFloatingPointer {
    char signature[4]; // "_MP_"
    uint32_t config_table; // physical address of the configuration table
    uint8_t length; // in 16-byte units
    uint8_t spec_rev;
    uint8_t checksum;
    uint8_t feature[5]; // feature[0] = 0: a configuration table is present
};
static_assert(sizeof(MpFloatingPointer) == 16);
static_assert(offsetof(MpFloatingPointer, checksum) == 10);

struct [[gnu::packed]] MpConfigHeader {
    char signature[4]; // "PCMP"
    uint16_t base_table_length;
    uint8_t spec_rev;
    uint8_t checksum;
    char oem_id[8];
    char product_id[12];
    uint32_t oem_table_pointer;
    uint16_t oem_table_size;
    uint16_t entry_count;
    uint32_t local_apic_address;
    uint16_t extended_table_length;
    uint8_t extended_table_checksum;
    uint8_t reserved;
};
static_assert(sizeof(MpConfigHeader) == 44);
static_assert(offsetof(MpConfigHeader, checksum) == 7);
static_assert(offsetof(MpConfigHeader, entry_count) == 34);
static_assert(offsetof(MpConfigHeader, local_apic_address) == 36);

enum MpEntryType : uint8_t { Processor = 0, Bus = 1, IoApic = 2, IoInterrupt = 3, LocalInterrupt = 4 };
enum MpInterruptType : uint8_t { Int = 0, Nmi = 1, Smi = 2, ExtInt = 3 };

struct [[gnu::packed]] MpProcessor {
    uint8_t type;
    uint8_t local_apic_id;
    uint8_t local_apic_version;
    uint8_t cpu_flags; // bit 0 enabled, bit 1 bootstrap processor
    uint32_t cpu_signature;
    uint32_t feature_flags;
    uint32_t reserved[2];
};
static_assert(sizeof(MpProcessor) == 20);

struct [[gnu::packed]] MpBus {
    uint8_t type;
    uint8_t bus_id;
    char bus_type[6]; // space padded
};
static_assert(sizeof(MpBus) == 8);

struct [[gnu::packed]] MpIoApic {
    uint8_t type;
    uint8_t id;
    uint8_t version;
    uint8_t flags; // bit 0 enabled
    uint32_t address;
};
static_assert(sizeof(MpIoApic) == 8);

// Both the I/O and the local interrupt assignment entries have this shape.
struct [[gnu::packed]] MpInterrupt {
    uint8_t type;
    uint8_t interrupt_type;
    uint16_t flags; // polarity bits 1:0, trigger bits 3:2; 0 = conforms to the bus
    uint8_t source_bus_id;
    uint8_t source_bus_irq;
    uint8_t dest_apic_id;
    uint8_t dest_pin; // I/O APIC INTIN# or local APIC LINTIN#
};
static_assert(sizeof(MpInterrupt) == 8);

constexpr uint64_t kIoInterruptEntries = kIsaIrqs - 1; // every ISA IRQ but the cascade IRQ2
constexpr uint64_t kFixedEntriesSize = sizeof(MpConfigHeader) + sizeof(MpBus) + sizeof(MpIoApic)
    + kIoInterruptEntries * sizeof(MpInterrupt) + 2 * sizeof(MpInterrupt);


} // namespace

uint64_t mp_table_size(uint32_t vcpus)
{
    return sizeof(MpFloatingPointer) + kFixedEntriesSize + uint64_t { vcpus } * sizeof(MpProcessor);
}

uint32_t mp_table_max_vcpus()
{
    constexpr uint64_t space = layout::kLowRamEnd - layout::kMpTable;
    return static_cast<uint32_t>((space - sizeof(MpFloatingPointer) - kFixedEntriesSize) / sizeof(MpProcessor));
}

Result<void> build_mp_table(GuestMemory& mem, uint32_t vcpus)
{
    if (vcpus == 0)
        return make_error("MP table needs at least one vCPU");
    if (vcpus > mp_table_max_vcpus())
        return make_error("MP table for {} vCPUs needs {} bytes but the EBDA at {:#x} holds {} (at most {} vCPUs)",
                          vcpus, mp_table_size(vcpus), layout::kMpTable, layout::kLowRamEnd - layout::kMpTable,
                          mp_table_max_vcpus());

    const uint64_t config_address = layout::kMpTable + sizeof(MpFloatingPointer);
    const auto ioapic_id = static_cast<uint8_t>(vcpus);

    std::vector<uint8_t> config;
    append_obj(config, MpConfigHeader {}); // filled in below
    uint16_t entries = 0;
    for (uint32_t cpu = 0; cpu < vcpus; ++cpu) {
        uint8_t flags = 0x01 | (cpu == 0 ? 0x02 : 0x00);
        append_obj(config, MpProcessor { Processor, static_cast<uint8_t>(cpu), kApicVersion, flags, kCpuSignature,
                                         kCpuFeatures, { 0, 0 } });
        ++entries;
    }
    append_obj(config, MpBus { Bus, kIsaBusId, { 'I', 'S', 'A', ' ', ' ', ' ' } });
    ++entries;
    append_obj(config, MpIoApic { IoApic, ioapic_id, kIoApicVersion, 0x01, static_cast<uint32_t>(layout::kIoapicBase) });
    ++entries;
    for (uint8_t irq = 0; irq < kIsaIrqs; ++irq) {
        if (irq == 2)
            continue; // the 8259 cascade; pin 2 carries IRQ0 instead
        uint8_t pin = irq == 0 ? 2 : irq;
        append_obj(config, MpInterrupt { IoInterrupt, Int, 0, kIsaBusId, irq, ioapic_id, pin });
        ++entries;
    }
    append_obj(config, MpInterrupt { LocalInterrupt, ExtInt, 0, kIsaBusId, 0, kAllLocalApics, 0 });
    append_obj(config, MpInterrupt { LocalInterrupt, Nmi, 0, kIsaBusId, 0, kAllLocalApics, 1 });
    entries += 2;

    MpConfigHeader header {};
    std::memcpy(header.signature, "PCMP", 4);
    header.base_table_length = static_cast<uint16_t>(config.size());
    header.spec_rev = kMpSpecRevision;
    std::memcpy(header.oem_id, "VESSEL  ", 8);
    std::memcpy(header.product_id, "VESSELVM    ", 12);
    header.entry_count = entries;
    header.local_apic_address = static_cast<uint32_t>(layout::kLapicBase);
    std::memcpy(config.data(), &header, sizeof(header));
    config[offsetof(MpConfigHeader, checksum)] = checksum_of(config);

    MpFloatingPointer fp {};
    std::memcpy(fp.signature, "_MP_", 4);
    fp.config_table = static_cast<uint32_t>(config_address);
    fp.length = 1;
    fp.spec_rev = kMpSpecRevision;
    fp.checksum = checksum_of(std::span(reinterpret_cast<const uint8_t*>(&fp), sizeof(fp)));

    TRY_CTX(mem.fill(layout::kMpTable, 0, layout::kLowRamEnd - layout::kMpTable), "clearing the EBDA");
    TRY_CTX(mem.write_obj(layout::kMpTable, fp), "writing the MP floating pointer");
    TRY_CTX(mem.write(config_address, config), "writing the MP configuration table");
    TRY_CTX(mem.write_obj(kBdaEbdaSegment, static_cast<uint16_t>(layout::kEbdaStart >> 4)),
            "writing the BDA EBDA segment");
    TRY_CTX(mem.write_obj(kBdaBaseMemoryKib, static_cast<uint16_t>(layout::kEbdaStart / layout::KiB)),
            "writing the BDA base memory size");
    return {};
}

} // namespace vessel

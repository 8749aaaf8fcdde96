#include "arch/x86/acpi.h"

#include <cstddef>
#include <cstring>
#include <set>
#include <span>

#include "arch/x86/layout.h"
#include "arch/x86/table_bytes.h"

namespace vessel {

namespace {

using aml::Bytes;

constexpr char kOemId[6] = { 'V', 'E', 'S', 'S', 'E', 'L' };
constexpr char kOemTableId[8] = { 'V', 'E', 'S', 'S', 'E', 'L', 'V', 'M' };
constexpr char kCreatorId[4] = { 'V', 'S', 'S', 'L' };
constexpr uint32_t kOemRevision = 1;
constexpr uint32_t kCreatorRevision = 1;

// ACPI 6.3 revisions: FADT 6.3, MADT 5, DSDT 2 (64-bit integers), XSDT 1, RSDP 2.
constexpr uint8_t kFadtRevision = 6;
constexpr uint8_t kFadtMinorRevision = 3;
constexpr uint8_t kMadtRevision = 5;
constexpr uint8_t kDsdtRevision = 2;
constexpr uint8_t kXsdtRevision = 1;
constexpr uint8_t kRsdpRevision = 2;

constexpr uint64_t kTableAlign = 16;

struct [[gnu::packed]] Rsdp {
    char signature[8];
    uint8_t checksum; // over the first 20 bytes (the ACPI 1.0 structure)
    char oem_id[6];
    uint8_t revision;
    uint32_t rsdt_address;
    uint32_t length;
    uint64_t xsdt_address;
    uint8_t extended_checksum; // over all `length` bytes
    uint8_t reserved[3];
};
static_assert(sizeof(Rsdp) == 36);
static_assert(offsetof(Rsdp, length) == 20);
static_assert(offsetof(Rsdp, xsdt_address) == 24);
static_assert(offsetof(Rsdp, extended_checksum) == 32);

struct [[gnu::packed]] TableHeader {
    char signature[4];
    uint32_t length;
    uint8_t revision;
    uint8_t checksum;
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    char creator_id[4];
    uint32_t creator_revision;
};
static_assert(sizeof(TableHeader) == 36);
static_assert(offsetof(TableHeader, checksum) == 9);

// Generic Address Structure.
struct [[gnu::packed]] Gas {
    uint8_t space_id;    // 0 = system memory, 1 = system I/O
    uint8_t bit_width;
    uint8_t bit_offset;
    uint8_t access_size; // 1 = byte
    uint64_t address;
};
static_assert(sizeof(Gas) == 12);

constexpr uint8_t kGasSystemIo = 1;
constexpr uint8_t kGasAccessByte = 1;

constexpr Gas io_port8(uint16_t port) { return Gas { kGasSystemIo, 8, 0, kGasAccessByte, port }; }

struct [[gnu::packed]] Fadt {
    TableHeader header;
    uint32_t firmware_ctrl;
    uint32_t dsdt;
    uint8_t reserved0;
    uint8_t preferred_pm_profile;
    uint16_t sci_int;
    uint32_t smi_cmd;
    uint8_t acpi_enable;
    uint8_t acpi_disable;
    uint8_t s4bios_req;
    uint8_t pstate_cnt;
    uint32_t pm1a_evt_blk;
    uint32_t pm1b_evt_blk;
    uint32_t pm1a_cnt_blk;
    uint32_t pm1b_cnt_blk;
    uint32_t pm2_cnt_blk;
    uint32_t pm_tmr_blk;
    uint32_t gpe0_blk;
    uint32_t gpe1_blk;
    uint8_t pm1_evt_len;
    uint8_t pm1_cnt_len;
    uint8_t pm2_cnt_len;
    uint8_t pm_tmr_len;
    uint8_t gpe0_blk_len;
    uint8_t gpe1_blk_len;
    uint8_t gpe1_base;
    uint8_t cst_cnt;
    uint16_t p_lvl2_lat;
    uint16_t p_lvl3_lat;
    uint16_t flush_size;
    uint16_t flush_stride;
    uint8_t duty_offset;
    uint8_t duty_width;
    uint8_t day_alrm;
    uint8_t mon_alrm;
    uint8_t century;
    uint16_t iapc_boot_arch;
    uint8_t reserved1;
    uint32_t flags;
    Gas reset_reg;
    uint8_t reset_value;
    uint16_t arm_boot_arch;
    uint8_t minor_version;
    uint64_t x_firmware_ctrl;
    uint64_t x_dsdt;
    Gas x_pm1a_evt_blk;
    Gas x_pm1b_evt_blk;
    Gas x_pm1a_cnt_blk;
    Gas x_pm1b_cnt_blk;
    Gas x_pm2_cnt_blk;
    Gas x_pm_tmr_blk;
    Gas x_gpe0_blk;
    Gas x_gpe1_blk;
    Gas sleep_control_reg;
    Gas sleep_status_reg;
    char hypervisor_vendor_id[8];
};
static_assert(sizeof(Fadt) == 276);
static_assert(offsetof(Fadt, dsdt) == 40);
static_assert(offsetof(Fadt, sci_int) == 46);
static_assert(offsetof(Fadt, iapc_boot_arch) == 109);
static_assert(offsetof(Fadt, flags) == 112);
static_assert(offsetof(Fadt, reset_reg) == 116);
static_assert(offsetof(Fadt, reset_value) == 128);
static_assert(offsetof(Fadt, minor_version) == 131);
static_assert(offsetof(Fadt, x_dsdt) == 140);
static_assert(offsetof(Fadt, sleep_control_reg) == 244);
static_assert(offsetof(Fadt, sleep_status_reg) == 256);
static_assert(offsetof(Fadt, hypervisor_vendor_id) == 268);

// FADT flags.
constexpr uint32_t kFadtWbinvd = 1u << 0;
constexpr uint32_t kFadtPwrButton = 1u << 4; // no fixed-feature power button
constexpr uint32_t kFadtSlpButton = 1u << 5; // no fixed-feature sleep button
constexpr uint32_t kFadtResetRegSup = 1u << 10;
constexpr uint32_t kFadtHwReducedAcpi = 1u << 20;
// IAPC_BOOT_ARCH.
constexpr uint16_t kBootArch8042 = 1u << 1;
constexpr uint16_t kBootArchVgaNotPresent = 1u << 2;

struct [[gnu::packed]] MadtBody {
    uint32_t local_apic_address;
    uint32_t flags;
};
static_assert(sizeof(MadtBody) == 8);
constexpr uint32_t kMadtPcatCompat = 1u << 0;

struct [[gnu::packed]] MadtLocalApic {
    uint8_t type; // 0
    uint8_t length; // 8
    uint8_t processor_uid;
    uint8_t apic_id;
    uint32_t flags; // bit 0 enabled
};
static_assert(sizeof(MadtLocalApic) == 8);

struct [[gnu::packed]] MadtIoApic {
    uint8_t type; // 1
    uint8_t length; // 12
    uint8_t io_apic_id;
    uint8_t reserved;
    uint32_t address;
    uint32_t gsi_base;
};
static_assert(sizeof(MadtIoApic) == 12);

struct [[gnu::packed]] MadtInterruptOverride {
    uint8_t type; // 2
    uint8_t length; // 10
    uint8_t bus; // 0 = ISA
    uint8_t source; // bus-relative IRQ
    uint32_t gsi;
    uint16_t flags; // MPS INTI flags; 0 = conforms to the bus
};
static_assert(sizeof(MadtInterruptOverride) == 10);

struct [[gnu::packed]] MadtLocalApicNmi {
    uint8_t type; // 4
    uint8_t length; // 6
    uint8_t processor_uid; // 0xff = all processors
    uint16_t flags;
    uint8_t lint;
};
static_assert(sizeof(MadtLocalApicNmi) == 6);


TableHeader make_header(const char (&signature)[5], uint8_t revision)
{
    TableHeader h {};
    std::memcpy(h.signature, signature, 4);
    h.revision = revision;
    std::memcpy(h.oem_id, kOemId, sizeof(kOemId));
    std::memcpy(h.oem_table_id, kOemTableId, sizeof(kOemTableId));
    h.oem_revision = kOemRevision;
    std::memcpy(h.creator_id, kCreatorId, sizeof(kCreatorId));
    h.creator_revision = kCreatorRevision;
    return h;
}

// Sets the header's length to the table size and fixes the checksum so all bytes sum to 0.
void finish_table(Bytes& table)
{
    uint32_t length = static_cast<uint32_t>(table.size());
    std::memcpy(table.data() + offsetof(TableHeader, length), &length, sizeof(length));
    table[offsetof(TableHeader, checksum)] = 0;
    table[offsetof(TableHeader, checksum)] = checksum_of(table);
}

Result<Bytes> hid_object(const AcpiDevice& dev)
{
    if (aml::is_eisa_id(dev.hid))
        return aml::dword(TRY(aml::eisa_id(dev.hid)));
    bool valid = dev.hid.size() == 8;
    for (char c : dev.hid)
        valid = valid && ((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'));
    if (!valid)
        return make_error("_HID {:?} is neither an EISA id (\"PNP0501\") nor an 8-character ACPI id "
                          "(\"LNRO0005\")",
                          dev.hid);
    return aml::string(dev.hid);
}

Result<Bytes> crs_object(const AcpiDevice& dev)
{
    Bytes descriptors;
    for (const auto& io : dev.io) {
        if (io.length == 0 || io.base + static_cast<uint32_t>(io.length) > 0x10000)
            return make_error("I/O range {:#x}+{} is empty or beyond port 0xffff", io.base, io.length);
        aml::append(descriptors, aml::io_decode16(io.base, io.base, 1, io.length));
    }
    for (const auto& mem : dev.memory) {
        if (mem.length == 0 || mem.base >= layout::k4GiB || mem.length > layout::k4GiB - mem.base)
            return make_error("memory range {:#x}+{:#x} is empty or not below 4 GiB", mem.base, mem.length);
        aml::append(descriptors,
                    aml::memory32_fixed(static_cast<uint32_t>(mem.base), static_cast<uint32_t>(mem.length)));
    }
    for (const auto& irq : dev.interrupts) {
        if (irq.gsi >= layout::kIoapicPins)
            return make_error("GSI {} is beyond the I/O APIC's {} pins", irq.gsi, layout::kIoapicPins);
        const uint32_t gsis[] = { irq.gsi };
        aml::append(descriptors, TRY(aml::extended_interrupt(gsis, irq.trigger, irq.polarity, irq.shared)));
    }
    return aml::resource_template(descriptors);
}

Result<Bytes> device_aml(const AcpiDevice& dev)
{
    Bytes body = TRY(aml::name("_HID", TRY(hid_object(dev))));
    aml::append(body, TRY(aml::name("_UID", aml::integer(dev.uid))));
    if (!dev.io.empty() || !dev.memory.empty() || !dev.interrupts.empty())
        aml::append(body, TRY(aml::name("_CRS", TRY(crs_object(dev)))));
    return aml::device(dev.name, body);
}

// Device(VGEN) and Device(GED0) (see AcpiVmGenId).
Result<Bytes> vmgenid_aml(const AcpiVmGenId& gen)
{
    if (gen.address % 8 != 0)
        return make_error("the VM generation ID address {:#x} is not 8-byte aligned", gen.address);
    if (gen.gsi >= layout::kIoapicPins)
        return make_error("GSI {} is beyond the I/O APIC's {} pins", gen.gsi, layout::kIoapicPins);

    constexpr std::string_view kCompatibleId = "VM_GEN_COUNTER";
    Bytes vgen = TRY(aml::name("_HID", TRY(aml::string("VMGENCTR"))));
    aml::append(vgen, TRY(aml::name("_CID", TRY(aml::string(kCompatibleId)))));
    aml::append(vgen, TRY(aml::name("_DDN", TRY(aml::string(kCompatibleId)))));
    std::vector<Bytes> address { aml::integer(gen.address & 0xffffffff), aml::integer(gen.address >> 32) };
    aml::append(vgen,
        TRY(aml::method("ADDR", 0, aml::MethodSerialize::NotSerialized, aml::return_(TRY(aml::package(address))))));
    Bytes out = TRY(aml::device("VGEN", vgen));

    Bytes ged = TRY(aml::name("_HID", TRY(aml::string("ACPI0013"))));
    const uint32_t gsis[] = { gen.gsi };
    Bytes interrupt
        = TRY(aml::extended_interrupt(gsis, aml::InterruptTrigger::Edge, aml::InterruptPolarity::ActiveHigh));
    aml::append(ged, TRY(aml::name("_CRS", TRY(aml::resource_template(interrupt)))));
    // 0x80: a device-specific notification, which Linux hands to the vmgenid driver.
    Bytes notify = TRY(aml::notify("\\_SB_.VGEN", aml::integer(0x80)));
    Bytes on_gsi = TRY(aml::if_(aml::lequal(TRY(aml::arg(0)), aml::integer(gen.gsi)), notify));
    aml::append(ged, TRY(aml::method("_EVT", 1, aml::MethodSerialize::NotSerialized, on_gsi)));
    aml::append(out, TRY(aml::device("GED0", ged)));
    return out;
}

Result<void> check_vcpus(uint32_t vcpus)
{
    if (vcpus == 0 || vcpus > kAcpiMaxVcpus)
        return make_error("ACPI MADT supports 1 to {} vCPUs, not {}", kAcpiMaxVcpus, vcpus);
    return {};
}

Bytes build_fadt(uint64_t dsdt_address)
{
    Fadt fadt {};
    fadt.header = make_header("FACP", kFadtRevision);
    fadt.dsdt = static_cast<uint32_t>(dsdt_address);
    fadt.x_dsdt = dsdt_address;
    fadt.sci_int = 0; // hardware-reduced: no SCI, no PM1/GPE blocks, no FACS
    fadt.iapc_boot_arch = kBootArch8042 | kBootArchVgaNotPresent;
    fadt.century = 0x32; // the CMOS RTC keeps the century in register 0x32
    fadt.flags = kFadtWbinvd | kFadtPwrButton | kFadtSlpButton | kFadtResetRegSup | kFadtHwReducedAcpi;
    fadt.reset_reg = io_port8(layout::kAcpiResetPort);
    fadt.reset_value = layout::kAcpiResetValue;
    fadt.minor_version = kFadtMinorRevision;
    fadt.sleep_control_reg = io_port8(layout::kAcpiSleepControlPort);
    fadt.sleep_status_reg = io_port8(layout::kAcpiSleepStatusPort);
    std::memcpy(fadt.hypervisor_vendor_id, "VESSEL\0\0", 8);
    Bytes table;
    append_obj(table, fadt);
    finish_table(table);
    return table;
}

Bytes build_madt(uint32_t vcpus)
{
    Bytes table;
    append_obj(table, make_header("APIC", kMadtRevision));
    append_obj(table, MadtBody { static_cast<uint32_t>(layout::kLapicBase), kMadtPcatCompat });
    for (uint32_t i = 0; i < vcpus; ++i) {
        auto id = static_cast<uint8_t>(i);
        append_obj(table, MadtLocalApic { 0, sizeof(MadtLocalApic), id, id, 1 });
    }
    append_obj(table, MadtIoApic { 1, sizeof(MadtIoApic), static_cast<uint8_t>(vcpus), 0,
                                   static_cast<uint32_t>(layout::kIoapicBase), 0 });
    // The PIT's IRQ0 is wired to I/O APIC pin 2, as on every PC.
    append_obj(table, MadtInterruptOverride { 2, sizeof(MadtInterruptOverride), 0, 0, 2, 0 });
    append_obj(table, MadtLocalApicNmi { 4, sizeof(MadtLocalApicNmi), 0xff, 0, 1 });
    finish_table(table);
    return table;
}

Bytes build_xsdt(std::span<const uint64_t> tables)
{
    Bytes table;
    append_obj(table, make_header("XSDT", kXsdtRevision));
    for (uint64_t address : tables)
        append_obj(table, address);
    finish_table(table);
    return table;
}

Rsdp build_rsdp(uint64_t xsdt_address)
{
    Rsdp rsdp {};
    std::memcpy(rsdp.signature, "RSD PTR ", 8);
    std::memcpy(rsdp.oem_id, kOemId, sizeof(kOemId));
    rsdp.revision = kRsdpRevision;
    rsdp.rsdt_address = 0; // XSDT only
    rsdp.length = sizeof(Rsdp);
    rsdp.xsdt_address = xsdt_address;
    auto bytes = [&] { return std::span(reinterpret_cast<const uint8_t*>(&rsdp), sizeof(rsdp)); };
    rsdp.checksum = checksum_of(bytes().first(20));
    rsdp.extended_checksum = checksum_of(bytes());
    return rsdp;
}

// Hands out 16-byte aligned slots in [kAcpiStart, kAcpiEnd) and writes tables into them.
class TableWriter {
public:
    TableWriter(GuestMemory& mem, uint64_t start) : m_mem(mem), m_next(start) { }

    Result<uint64_t> place(std::span<const uint8_t> table, std::string_view what)
    {
        uint64_t address = (m_next + kTableAlign - 1) & ~(kTableAlign - 1);
        if (address > layout::kAcpiEnd || table.size() > layout::kAcpiEnd - address)
            return make_error("ACPI {} ({} bytes) does not fit below {:#x}", what, table.size(), layout::kAcpiEnd);
        TRY_CTX(m_mem.write(address, table), fmt::format("writing ACPI {}", what));
        m_next = address + table.size();
        return address;
    }

private:
    GuestMemory& m_mem;
    uint64_t m_next;
};

} // namespace

std::vector<AcpiDevice> legacy_acpi_devices()
{
    std::vector<AcpiDevice> devices;
    devices.push_back(AcpiDevice {
        .name = "COM1",
        .hid = "PNP0501",
        .uid = 0,
        .io = { { layout::kCom1Port, 8 } },
        .memory = {},
        .interrupts = { { layout::kCom1Irq, AcpiIrqTrigger::Edge, AcpiIrqPolarity::ActiveHigh, false } },
    });
    devices.push_back(AcpiDevice {
        .name = "RTC",
        .hid = "PNP0B00",
        .uid = 0,
        .io = { { layout::kRtcPort, 2 } },
        .memory = {},
        .interrupts = { { layout::kRtcIrq, AcpiIrqTrigger::Edge, AcpiIrqPolarity::ActiveHigh, false } },
    });
    devices.push_back(AcpiDevice {
        .name = "KBD",
        .hid = "PNP0303",
        .uid = 0,
        .io = { { layout::kI8042Port, 1 }, { static_cast<uint16_t>(layout::kI8042Port + 4), 1 } },
        .memory = {},
        .interrupts = { { 1, AcpiIrqTrigger::Edge, AcpiIrqPolarity::ActiveHigh, false } },
    });
    return devices;
}

AcpiDevice virtio_mmio_acpi_device(uint32_t index, uint64_t base, uint64_t size, uint32_t gsi, AcpiIrqTrigger trigger)
{
    return AcpiDevice {
        .name = fmt::format("VR{:02X}", index),
        .hid = "LNRO0005",
        .uid = index,
        .io = {},
        .memory = { { base, size } },
        .interrupts = { { gsi, trigger, AcpiIrqPolarity::ActiveHigh, false } },
    };
}

Result<std::vector<uint8_t>> build_dsdt(const AcpiConfig& cfg)
{
    Bytes devices;
    std::set<Bytes> names;
    for (const auto& dev : cfg.devices) {
        auto seg = aml::name_seg(dev.name);
        if (!seg.ok())
            return seg.release_error().with_context("ACPI device name");
        if (!names.insert(seg.value()).second)
            return make_error("two ACPI devices are named {:?}", dev.name);
        aml::append(devices, TRY_CTX(device_aml(dev), fmt::format("ACPI device {}", dev.name)));
    }
    if (cfg.vmgenid) {
        for (const char* reserved : { "VGEN", "GED0" }) {
            if (names.contains(TRY(aml::name_seg(reserved))))
                return make_error("ACPI device name {} is taken by the VM generation ID devices", reserved);
        }
        for (const auto& dev : cfg.devices) {
            for (const auto& irq : dev.interrupts) {
                if (irq.gsi == cfg.vmgenid->gsi)
                    return make_error("ACPI device {} uses GSI {}, the Generic Event Device's", dev.name, irq.gsi);
            }
        }
        aml::append(devices, TRY_CTX(vmgenid_aml(*cfg.vmgenid), "the VM generation ID devices"));
    }

    Bytes table;
    append_obj(table, make_header("DSDT", kDsdtRevision));
    aml::append(table, TRY(aml::scope("\\_SB_", devices)));
    // Name(_S5_, Package() { SLP_TYPa, SLP_TYPb }): the guest powers off by writing
    // (SLP_TYPa << 2) | SLP_EN to the FADT's SLEEP_CONTROL_REG.
    std::vector<Bytes> s5 { aml::integer(layout::kAcpiSlpTypS5), aml::integer(0) };
    aml::append(table, TRY(aml::name("_S5_", TRY(aml::package(s5)))));
    finish_table(table);
    return table;
}

Result<uint64_t> build_acpi_tables(GuestMemory& mem, const AcpiConfig& cfg)
{
    TRY(check_vcpus(cfg.vcpus));
    Bytes dsdt = TRY(build_dsdt(cfg));

    TRY_CTX(mem.fill(layout::kAcpiStart, 0, layout::kAcpiEnd - layout::kAcpiStart), "clearing the ACPI area");
    // The RSDP goes first, at 0xe0000: inside the 0xe0000-0xfffff range a legacy OS scans.
    const uint64_t rsdp_address = layout::kAcpiStart;
    TableWriter writer(mem, rsdp_address + sizeof(Rsdp));
    uint64_t dsdt_address = TRY(writer.place(dsdt, "DSDT"));
    uint64_t fadt_address = TRY(writer.place(build_fadt(dsdt_address), "FADT"));
    uint64_t madt_address = TRY(writer.place(build_madt(cfg.vcpus), "MADT"));
    const uint64_t tables[] = { fadt_address, madt_address };
    uint64_t xsdt_address = TRY(writer.place(build_xsdt(tables), "XSDT"));
    TRY_CTX(mem.write_obj(rsdp_address, build_rsdp(xsdt_address)), "writing the ACPI RSDP");
    return rsdp_address;
}

} // namespace vessel

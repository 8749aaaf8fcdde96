#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "arch/x86/acpi.h"
#include "arch/x86/layout.h"
#include "table_test_support.h"

using namespace vessel;

namespace {

using namespace vessel::table_test;



std::string str_at(std::span<const uint8_t> bytes, size_t offset, size_t len)
{
    return std::string(reinterpret_cast<const char*>(bytes.data() + offset), len);
}


// A whole table (header length) at `gpa`, which must lie in the ACPI area.
Bytes read_table(const GuestMemory& mem, uint64_t gpa)
{
    EXPECT_GE(gpa, layout::kAcpiStart);
    EXPECT_LT(gpa, layout::kAcpiEnd);
    auto length = mem.read_obj<uint32_t>(gpa + 4).value();
    EXPECT_GE(length, 36u);
    EXPECT_LE(gpa + length, layout::kAcpiEnd);
    return read_bytes(mem, gpa, length);
}

bool contains(std::span<const uint8_t> hay, std::string_view needle)
{
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

bool contains(std::span<const uint8_t> hay, std::span<const uint8_t> needle)
{
    return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

AcpiConfig standard_config(uint32_t vcpus)
{
    AcpiConfig cfg { vcpus, legacy_acpi_devices() };
    for (uint32_t i = 0; i < 2; ++i)
        cfg.devices.push_back(virtio_mmio_acpi_device(i, layout::kVirtioMmioBase + i * layout::kVirtioMmioSize,
                                                      layout::kVirtioMmioSize, 5 + i));
    return cfg;
}

struct Built {
    GuestMemory mem;
    uint64_t rsdp;
    Bytes xsdt;
    std::map<std::string, Bytes> tables; // by signature, incl. DSDT
};

Built build(const AcpiConfig& cfg)
{
    auto mem = GuestMemory::create(64 * layout::MiB);
    EXPECT_TRUE(mem.ok());
    auto rsdp = build_acpi_tables(mem.value(), cfg);
    EXPECT_TRUE(rsdp.ok()) << rsdp.error().message();
    Built b { mem.release_value(), rsdp.value(), {}, {} };
    auto xsdt_addr = b.mem.read_obj<uint64_t>(b.rsdp + 24).value();
    b.xsdt = read_table(b.mem, xsdt_addr);
    for (size_t off = 36; off + 8 <= b.xsdt.size(); off += 8) {
        Bytes t = read_table(b.mem, at<uint64_t>(b.xsdt, off));
        b.tables[str_at(t, 0, 4)] = t;
    }
    if (b.tables.count("FACP")) {
        Bytes t = read_table(b.mem, at<uint64_t>(b.tables["FACP"], 140));
        b.tables["DSDT"] = t;
    }
    return b;
}

void expect_common_header(std::span<const uint8_t> t)
{
    EXPECT_EQ(sum_of(t), 0) << str_at(t, 0, 4) << " checksum";
    EXPECT_EQ(at<uint32_t>(t, 4), t.size());
    EXPECT_EQ(str_at(t, 10, 6), "VESSEL");
    EXPECT_EQ(str_at(t, 16, 8), "VESSELVM");
    EXPECT_EQ(str_at(t, 28, 4), "VSSL");
}

struct MadtEntry {
    uint8_t type;
    Bytes data;
};

std::vector<MadtEntry> madt_entries(std::span<const uint8_t> madt)
{
    std::vector<MadtEntry> out;
    size_t off = 44;
    while (off < madt.size()) {
        uint8_t type = madt[off];
        uint8_t len = madt[off + 1];
        EXPECT_GE(len, 2);
        EXPECT_LE(off + len, madt.size());
        if (len < 2 || off + len > madt.size())
            break;
        out.push_back({ type, Bytes(madt.begin() + off, madt.begin() + off + len) });
        off += len;
    }
    EXPECT_EQ(off, madt.size());
    return out;
}

} // namespace

TEST(Acpi, RsdpAtE0000WithBothChecksums)
{
    Built b = build(standard_config(1));
    EXPECT_EQ(b.rsdp, layout::kAcpiStart);
    EXPECT_EQ(b.rsdp % 16, 0u);
    Bytes rsdp = read_bytes(b.mem, b.rsdp, 36);
    EXPECT_EQ(str_at(rsdp, 0, 8), "RSD PTR ");
    EXPECT_EQ(sum_of(std::span(rsdp).first(20)), 0);
    EXPECT_EQ(sum_of(rsdp), 0);
    EXPECT_EQ(str_at(rsdp, 9, 6), "VESSEL");
    EXPECT_EQ(rsdp[15], 2);                // revision
    EXPECT_EQ(at<uint32_t>(rsdp, 16), 0u); // no RSDT
    EXPECT_EQ(at<uint32_t>(rsdp, 20), 36u);
    uint64_t xsdt = at<uint64_t>(rsdp, 24);
    EXPECT_GT(xsdt, layout::kAcpiStart);
    EXPECT_LT(xsdt, layout::kAcpiEnd);
    EXPECT_EQ(b.mem.read_obj<uint32_t>(xsdt).value(), 0x54445358u); // "XSDT"
}

TEST(Acpi, LegacyScanFindsRsdp)
{
    // What Linux does without a boot-protocol pointer: scan 0xe0000-0xfffff in 16-byte steps.
    Built b = build(standard_config(2));
    std::optional<uint64_t> found;
    for (uint64_t a = 0xe0000; a < 0x100000 && !found; a += 16) {
        Bytes p = read_bytes(b.mem, a, 20);
        if (str_at(p, 0, 8) == "RSD PTR " && sum_of(p) == 0)
            found = a;
    }
    ASSERT_TRUE(found.has_value());
    EXPECT_EQ(*found, b.rsdp);
}

TEST(Acpi, XsdtListsFadtAndMadt)
{
    Built b = build(standard_config(2));
    expect_common_header(b.xsdt);
    EXPECT_EQ(str_at(b.xsdt, 0, 4), "XSDT");
    EXPECT_EQ(b.xsdt[8], 1);
    EXPECT_EQ(b.xsdt.size(), 36u + 2 * 8);
    EXPECT_EQ(b.tables.size(), 3u);
    EXPECT_TRUE(b.tables.count("FACP"));
    EXPECT_TRUE(b.tables.count("APIC"));
    EXPECT_TRUE(b.tables.count("DSDT"));
}

TEST(Acpi, EveryTableChecksumsAndLengths)
{
    Built b = build(standard_config(4));
    for (const auto& [sig, t] : b.tables) {
        SCOPED_TRACE(sig);
        expect_common_header(t);
    }
    EXPECT_EQ(b.tables["FACP"].size(), 276u);
    EXPECT_EQ(b.tables["FACP"][8], 6);
    EXPECT_EQ(b.tables["APIC"].size(), 44u + 4 * 8 + 12 + 10 + 6);
    EXPECT_EQ(b.tables["DSDT"][8], 2);
}

TEST(Acpi, TablesDoNotOverlap)
{
    Built b = build(standard_config(64));
    std::vector<std::pair<uint64_t, uint64_t>> ranges { { b.rsdp, 36 }, { at<uint64_t>(read_bytes(b.mem, b.rsdp, 36), 24), b.xsdt.size() } };
    for (size_t off = 36; off < b.xsdt.size(); off += 8) {
        uint64_t a = at<uint64_t>(b.xsdt, off);
        ranges.push_back({ a, b.mem.read_obj<uint32_t>(a + 4).value() });
    }
    uint64_t dsdt = at<uint64_t>(b.tables["FACP"], 140);
    ranges.push_back({ dsdt, b.tables["DSDT"].size() });
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 0; i + 1 < ranges.size(); ++i)
        EXPECT_LE(ranges[i].first + ranges[i].second, ranges[i + 1].first);
    EXPECT_LE(ranges.back().first + ranges.back().second, layout::kAcpiEnd); // below the reset stub page
}

TEST(Acpi, FadtIsHardwareReduced)
{
    Built b = build(standard_config(1));
    const Bytes& f = b.tables["FACP"];
    EXPECT_EQ(f[8], 6);                 // revision
    EXPECT_EQ(f[131], 3);               // minor version: ACPI 6.3
    EXPECT_EQ(at<uint16_t>(f, 46), 0);  // SCI_INT
    EXPECT_EQ(at<uint32_t>(f, 36), 0u); // no FACS
    EXPECT_EQ(at<uint64_t>(f, 132), 0u);
    uint32_t flags = at<uint32_t>(f, 112);
    EXPECT_TRUE(flags & (1u << 20)) << "HW_REDUCED_ACPI";
    EXPECT_TRUE(flags & (1u << 10)) << "RESET_REG_SUP";
    EXPECT_TRUE(flags & (1u << 4)) << "PWR_BUTTON";
    EXPECT_TRUE(flags & (1u << 5)) << "SLP_BUTTON";
    uint16_t boot_arch = at<uint16_t>(f, 109);
    EXPECT_TRUE(boot_arch & (1u << 1)) << "8042";
    EXPECT_TRUE(boot_arch & (1u << 2)) << "VGA not present";
    EXPECT_FALSE(boot_arch & (1u << 3)) << "MSI not supported";
    EXPECT_FALSE(boot_arch & (1u << 5)) << "CMOS RTC not present";

    // DSDT and X_DSDT agree and point at the DSDT.
    uint32_t dsdt = at<uint32_t>(f, 40);
    EXPECT_EQ(at<uint64_t>(f, 140), dsdt);
    EXPECT_EQ(b.mem.read_obj<uint32_t>(dsdt).value(), 0x54445344u); // "DSDT"

    auto expect_io8 = [&](size_t off, uint16_t port) {
        EXPECT_EQ(f[off + 0], 1) << "system I/O space at " << off;
        EXPECT_EQ(f[off + 1], 8) << "bit width at " << off;
        EXPECT_EQ(f[off + 2], 0) << "bit offset at " << off;
        EXPECT_EQ(f[off + 3], 1) << "byte access at " << off;
        EXPECT_EQ(at<uint64_t>(f, off + 4), port) << "address at " << off;
    };
    expect_io8(116, layout::kAcpiResetPort);
    EXPECT_EQ(f[128], layout::kAcpiResetValue);
    expect_io8(244, layout::kAcpiSleepControlPort);
    expect_io8(256, layout::kAcpiSleepStatusPort);
    // No fixed-hardware blocks in a hardware-reduced FADT.
    for (size_t off = 148; off < 244; ++off)
        EXPECT_EQ(f[off], 0) << "X_ block byte " << off;
    EXPECT_EQ(std::memcmp(f.data() + 268, "VESSEL\0\0", 8), 0);
}

class AcpiMadt : public testing::TestWithParam<uint32_t> { };

TEST_P(AcpiMadt, OneLapicPerVcpuPlusIoapicIsoNmi)
{
    const uint32_t vcpus = GetParam();
    Built b = build(standard_config(vcpus));
    const Bytes& m = b.tables["APIC"];
    EXPECT_EQ(m[8], 5);
    EXPECT_EQ(at<uint32_t>(m, 36), layout::kLapicBase);
    EXPECT_EQ(at<uint32_t>(m, 40), 1u); // PCAT_COMPAT
    auto entries = madt_entries(m);
    ASSERT_EQ(entries.size(), vcpus + 3);

    std::map<uint8_t, int> per_type;
    uint32_t next_lapic = 0;
    for (const auto& e : entries) {
        per_type[e.type]++;
        switch (e.type) {
        case 0:
            ASSERT_EQ(e.data.size(), 8u);
            EXPECT_EQ(e.data[2], next_lapic) << "processor UID";
            EXPECT_EQ(e.data[3], next_lapic) << "APIC id";
            EXPECT_EQ(at<uint32_t>(e.data, 4), 1u) << "enabled";
            ++next_lapic;
            break;
        case 1:
            ASSERT_EQ(e.data.size(), 12u);
            EXPECT_EQ(e.data[2], vcpus) << "I/O APIC id";
            EXPECT_EQ(at<uint32_t>(e.data, 4), layout::kIoapicBase);
            EXPECT_EQ(at<uint32_t>(e.data, 8), 0u) << "GSI base";
            break;
        case 2:
            ASSERT_EQ(e.data.size(), 10u);
            EXPECT_EQ(e.data[2], 0) << "ISA bus";
            EXPECT_EQ(e.data[3], 0) << "IRQ0";
            EXPECT_EQ(at<uint32_t>(e.data, 4), 2u) << "GSI 2";
            EXPECT_EQ(at<uint16_t>(e.data, 8), 0) << "conforming";
            break;
        case 4:
            ASSERT_EQ(e.data.size(), 6u);
            EXPECT_EQ(e.data[2], 0xff) << "all processors";
            EXPECT_EQ(at<uint16_t>(e.data, 3), 0);
            EXPECT_EQ(e.data[5], 1) << "LINT1";
            break;
        default:
            ADD_FAILURE() << "unexpected MADT entry type " << int(e.type);
        }
    }
    EXPECT_EQ(per_type[0], static_cast<int>(vcpus));
    EXPECT_EQ(per_type[1], 1);
    EXPECT_EQ(per_type[2], 1);
    EXPECT_EQ(per_type[4], 1);
}

INSTANTIATE_TEST_SUITE_P(Vcpus, AcpiMadt, testing::Values(1u, 2u, 64u, kAcpiMaxVcpus));

TEST(Acpi, RejectsBadVcpuCounts)
{
    auto mem = GuestMemory::create(64 * layout::MiB).release_value();
    EXPECT_FALSE(build_acpi_tables(mem, { 0, {} }).ok());
    auto too_many = build_acpi_tables(mem, { kAcpiMaxVcpus + 1, {} });
    ASSERT_FALSE(too_many.ok());
    EXPECT_NE(too_many.error().message().find("vCPUs"), std::string::npos);
}

TEST(Acpi, DsdtHoldsS5AndDevices)
{
    Built b = build(standard_config(1));
    const Bytes& d = b.tables["DSDT"];
    // Name(_S5_, Package(2) { 5, Zero }) at the root.
    const Bytes s5 { 0x08, '_', 'S', '5', '_', 0x12, 0x05, 0x02, 0x0a, layout::kAcpiSlpTypS5, 0x00 };
    EXPECT_TRUE(contains(d, s5));
    // \_SB_ scope with the devices.
    EXPECT_EQ(d[36], 0x10);
    EXPECT_TRUE(contains(d, "\\_SB_"));
    for (const char* name : { "COM1", "RTC_", "KBD_", "VR00", "VR01" }) {
        EXPECT_TRUE(contains(d, std::string_view(name))) << name;
    }
    // _HID EisaId("PNP0501") as a DWordConst, and the virtio-mmio string id.
    const Bytes com_hid { 0x08, '_', 'H', 'I', 'D', 0x0c, 0x41, 0xd0, 0x05, 0x01 };
    EXPECT_TRUE(contains(d, com_hid));
    EXPECT_TRUE(contains(d, "LNRO0005"));
    // COM1's IO(Decode16, 0x3f8, 0x3f8, 1, 8) and its edge/high interrupt 4.
    EXPECT_TRUE(contains(d, Bytes { 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08 }));
    EXPECT_TRUE(contains(d, Bytes { 0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0, 0, 0 }));
    // virtio-mmio 0: Memory32Fixed and a level/high interrupt 5.
    EXPECT_TRUE(contains(d, Bytes { 0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00 }));
    EXPECT_TRUE(contains(d, Bytes { 0x89, 0x06, 0x00, 0x01, 0x01, 0x05, 0, 0, 0 }));
}

TEST(Acpi, DsdtTopLevelPkgLengthsAddUp)
{
    // Walk the DSDT's top level: Scope(\_SB_) { ... } then Name(_S5_, ...) ending the table.
    for (uint32_t n_virtio : { 0u, 1u, 30u, 200u }) {
        AcpiConfig cfg { 2, legacy_acpi_devices() };
        for (uint32_t i = 0; i < n_virtio; ++i)
            cfg.devices.push_back(virtio_mmio_acpi_device(i, layout::kVirtioMmioBase + i * 0x1000, 0x1000, 5 + i % 19));
        Bytes d = build_dsdt(cfg).value();
        ASSERT_EQ(d[36], 0x10);
        unsigned follow = d[37] >> 6;
        uint32_t len = follow == 0 ? d[37] & 0x3fu : d[37] & 0x0fu;
        for (unsigned i = 0; i < follow; ++i)
            len |= static_cast<uint32_t>(d[38 + i]) << (4 + 8 * i);
        size_t after_scope = 37 + len;
        ASSERT_LT(after_scope, d.size());
        EXPECT_EQ(d[after_scope], 0x08) << n_virtio;
        EXPECT_EQ(str_at(d, after_scope + 1, 4), "_S5_");
        EXPECT_EQ(after_scope + 11, d.size()) << n_virtio;
        EXPECT_EQ(sum_of(d), 0);
    }
}

TEST(Acpi, RejectsInvalidDevices)
{
    auto mem = GuestMemory::create(64 * layout::MiB).release_value();
    auto try_device = [&](AcpiDevice dev) {
        AcpiConfig cfg { 1, { dev } };
        return build_acpi_tables(mem, cfg);
    };
    AcpiDevice good = virtio_mmio_acpi_device(0, layout::kVirtioMmioBase, 0x1000, 5);
    EXPECT_TRUE(try_device(good).ok());

    AcpiDevice bad = good;
    bad.name = "toolong";
    EXPECT_FALSE(try_device(bad).ok());
    bad = good;
    bad.hid = "virtio";
    EXPECT_FALSE(try_device(bad).ok());
    bad = good;
    bad.interrupts[0].gsi = layout::kIoapicPins;
    EXPECT_FALSE(try_device(bad).ok());
    bad = good;
    bad.memory[0].base = layout::k4GiB;
    EXPECT_FALSE(try_device(bad).ok());
    bad = good;
    bad.memory[0].length = 0;
    EXPECT_FALSE(try_device(bad).ok());
    bad = good;
    bad.io.push_back({ 0xfffc, 8 });
    EXPECT_FALSE(try_device(bad).ok());

    AcpiConfig dup { 1, { good, good } };
    auto r = build_acpi_tables(mem, dup);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.error().message().find("VR00"), std::string::npos);
}

TEST(Acpi, LegacyDevices)
{
    auto devs = legacy_acpi_devices();
    ASSERT_EQ(devs.size(), 3u);
    EXPECT_EQ(devs[0].hid, "PNP0501");
    EXPECT_EQ(devs[0].io[0].base, 0x3f8);
    EXPECT_EQ(devs[0].io[0].length, 8);
    EXPECT_EQ(devs[0].interrupts[0].gsi, 4u);
    EXPECT_EQ(devs[1].hid, "PNP0B00");
    EXPECT_EQ(devs[1].interrupts[0].gsi, 8u);
    EXPECT_EQ(devs[2].hid, "PNP0303");
    ASSERT_EQ(devs[2].io.size(), 2u);
    EXPECT_EQ(devs[2].io[1].base, 0x64);
    EXPECT_EQ(devs[2].interrupts[0].gsi, 1u);
    for (const auto& d : devs)
        EXPECT_EQ(d.interrupts[0].trigger, AcpiIrqTrigger::Edge);

    AcpiDevice v = virtio_mmio_acpi_device(0x1a, 0xd001a000, 0x200, 9, AcpiIrqTrigger::Edge);
    EXPECT_EQ(v.name, "VR1A");
    EXPECT_EQ(v.hid, "LNRO0005");
    EXPECT_EQ(v.uid, 0x1au);
    EXPECT_EQ(v.memory[0].length, 0x200u);
    EXPECT_EQ(v.interrupts[0].trigger, AcpiIrqTrigger::Edge);
}

// ---- The VM generation ID and the Generic Event Device ----

namespace {

AcpiConfig vmgenid_config(uint32_t vcpus)
{
    AcpiConfig cfg = standard_config(vcpus);
    cfg.vmgenid = AcpiVmGenId { layout::kVmGenId, layout::kGedGsi };
    return cfg;
}

Bytes name_seg_bytes(const char* s)
{
    return Bytes(s, s + std::strlen(s));
}

void add(Bytes& out, const Bytes& more)
{
    out.insert(out.end(), more.begin(), more.end());
}

Bytes concat(std::initializer_list<Bytes> parts)
{
    Bytes out;
    for (const auto& p : parts)
        add(out, p);
    return out;
}

// Name(_XXX, "text").
Bytes name_string_object(const char* seg, const char* text)
{
    return concat({ { 0x08 }, name_seg_bytes(seg), { 0x0d }, name_seg_bytes(text), { 0x00 } });
}

} // namespace

TEST(Acpi, DsdtVmGenIdAndGedBytes)
{
    AcpiConfig cfg { 1, {}, AcpiVmGenId { 0xfe000, 13 } };
    Bytes d = build_dsdt(cfg).value();
    // Device(VGEN) { Name(_HID, "VMGENCTR") Name(_CID, "VM_GEN_COUNTER") Name(_DDN, "VM_GEN_COUNTER")
    //   Method(ADDR, 0, NotSerialized) { Return (Package(2) { 0x000fe000, Zero }) } }
    Bytes vgen { 0x5b, 0x82, 0x40, 0x05 }; // DeviceOp, PkgLength 80 (two bytes)
    add(vgen, name_seg_bytes("VGEN"));
    add(vgen, name_string_object("_HID", "VMGENCTR"));
    add(vgen, name_string_object("_CID", "VM_GEN_COUNTER"));
    add(vgen, name_string_object("_DDN", "VM_GEN_COUNTER"));
    add(vgen, { 0x14, 0x10 }); // MethodOp, PkgLength 16
    add(vgen, name_seg_bytes("ADDR"));
    add(vgen, { 0x00 }); // no arguments, NotSerialized
    add(vgen, { 0xa4, 0x12, 0x08, 0x02, 0x0c, 0x00, 0xe0, 0x0f, 0x00, 0x00 }); // Return(Package(2){DWord, Zero})
    // Device(GED0) { Name(_HID, "ACPI0013")
    //   Name(_CRS, ResourceTemplate() { Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { 13 } })
    //   Method(_EVT, 1, NotSerialized) { If (Arg0 == 13) { Notify(\_SB_.VGEN, 0x80) } } }
    Bytes ged { 0x5b, 0x82, 0x43, 0x04 }; // DeviceOp, PkgLength 67
    add(ged, name_seg_bytes("GED0"));
    add(ged, name_string_object("_HID", "ACPI0013"));
    add(ged, { 0x08, '_', 'C', 'R', 'S' });
    add(ged, { 0x11, 0x0e, 0x0a, 0x0b }); // Buffer, PkgLength 14, size 11
    add(ged, { 0x89, 0x06, 0x00, 0x03, 0x01, 0x0d, 0x00, 0x00, 0x00 }); // Extended IRQ: consumer|edge, 1 GSI: 13
    add(ged, { 0x79, 0x00 }); // End Tag
    add(ged, { 0x14, 0x19 }); // MethodOp, PkgLength 25
    add(ged, name_seg_bytes("_EVT"));
    add(ged, { 0x01 }); // one argument, NotSerialized
    add(ged, { 0xa0, 0x12 }); // IfOp, PkgLength 18
    add(ged, { 0x93, 0x68, 0x0a, 0x0d }); // LEqual(Arg0, 13)
    add(ged, { 0x86, 0x5c, 0x2e }); // Notify(\ DualNamePrefix
    add(ged, name_seg_bytes("_SB_"));
    add(ged, name_seg_bytes("VGEN"));
    add(ged, { 0x0a, 0x80 }); // , 0x80)
    // Scope(\_SB_) { VGEN GED0 } is the whole scope.
    const Bytes scope = concat({ { 0x10, 0x4e, 0x09, 0x5c }, name_seg_bytes("_SB_"), vgen, ged });
    ASSERT_EQ(scope.size(), 0x9eu + 1); // the PkgLength (0x9e) counts all but the opcode
    ASSERT_GE(d.size(), 36 + scope.size());
    EXPECT_EQ(Bytes(d.begin() + 36, d.begin() + 36 + static_cast<std::ptrdiff_t>(scope.size())), scope);
    EXPECT_EQ(sum_of(d), 0);

    // In the full DSDT the two devices follow the others, with the address and GSI of layout.h.
    Bytes full = build_dsdt(vmgenid_config(2)).value();
    EXPECT_TRUE(contains(full, vgen));
    EXPECT_TRUE(contains(full, ged));
    EXPECT_EQ(layout::kVmGenId, 0xfe000u);
    EXPECT_EQ(layout::kGedGsi, 13u);
}

TEST(Acpi, DsdtVmGenIdHighAddressHalf)
{
    AcpiConfig cfg { 1, {}, AcpiVmGenId { 0x1'2345'6788ull, 9 } };
    Bytes d = build_dsdt(cfg).value();
    // Package(2) { 0x23456788, One }.
    EXPECT_TRUE(contains(d, Bytes { 0xa4, 0x12, 0x08, 0x02, 0x0c, 0x88, 0x67, 0x45, 0x23, 0x01 }));
    EXPECT_TRUE(contains(d, Bytes { 0x93, 0x68, 0x0a, 0x09 }));
}

TEST(Acpi, RejectsBadVmGenId)
{
    auto error_of = [](const AcpiConfig& cfg) {
        auto r = build_dsdt(cfg);
        EXPECT_FALSE(r.ok());
        return r.ok() ? std::string() : r.error().message();
    };
    EXPECT_NE(error_of({ 1, {}, AcpiVmGenId { 0xfe004, 13 } }).find("aligned"), std::string::npos);
    EXPECT_NE(error_of({ 1, {}, AcpiVmGenId { 0xfe000, layout::kIoapicPins } }).find("GSI"), std::string::npos);
    // A GSI another device uses (the first virtio device's 5; COM1's 4).
    EXPECT_NE(error_of({ 1, standard_config(1).devices, AcpiVmGenId { 0xfe000, 5 } }).find("VR00"), std::string::npos);
    EXPECT_NE(error_of({ 1, legacy_acpi_devices(), AcpiVmGenId { 0xfe000, 4 } }).find("COM1"), std::string::npos);
    AcpiConfig taken = vmgenid_config(1);
    taken.devices.push_back(virtio_mmio_acpi_device(0, layout::kVirtioMmioBase, 0x1000, 20));
    taken.devices.back().name = "GED0";
    EXPECT_NE(error_of(taken).find("GED0"), std::string::npos);
}

TEST(Acpi, TablesLeaveTheVmGenIdPageAlone)
{
    // The ACPI tables are cleared and written below kAcpiEnd, never over the ID written before
    // or after them; even a DSDT with 200 devices fits.
    auto mem = GuestMemory::create(64 * layout::MiB).release_value();
    ASSERT_TRUE(mem.fill(layout::kVmGenIdPage, 0xa5, layout::kResetStubPage - layout::kVmGenIdPage).ok());
    AcpiConfig cfg = vmgenid_config(8);
    for (uint32_t i = 2; i < 200; ++i)
        cfg.devices.push_back(virtio_mmio_acpi_device(i, layout::kVirtioMmioBase + i * 0x1000, 0x1000, 14 + i % 2));
    ASSERT_TRUE(build_acpi_tables(mem, cfg).ok());
    Bytes page = read_bytes(mem, layout::kVmGenIdPage, layout::kResetStubPage - layout::kVmGenIdPage);
    EXPECT_TRUE(std::all_of(page.begin(), page.end(), [](uint8_t b) { return b == 0xa5; }));
    EXPECT_LE(layout::kAcpiEnd, layout::kVmGenId);
    EXPECT_LE(layout::kVmGenId + layout::kVmGenIdSize, layout::kResetStubPage);
}

// ---- Validation with the ACPICA disassembler (iasl) ----

namespace {

std::optional<std::string> find_iasl()
{
    const char* path = std::getenv("PATH");
    std::stringstream dirs(path ? path : "");
    std::string dir;
    while (std::getline(dirs, dir, ':')) {
        auto candidate = std::filesystem::path(dir.empty() ? "." : dir) / "iasl";
        if (::access(candidate.c_str(), X_OK) == 0)
            return candidate.string();
    }
    if (::access("/usr/bin/iasl", X_OK) == 0)
        return std::string("/usr/bin/iasl");
    return std::nullopt;
}

class TempDir {
public:
    TempDir()
    {
        std::string pattern = (std::filesystem::temp_directory_path() / "vessel-acpi-XXXXXX").string();
        if (::mkdtemp(pattern.data()))
            m_path = pattern;
    }
    ~TempDir()
    {
        if (!m_path.empty() && !std::getenv("VESSEL_KEEP_IASL_OUTPUT")) {
            std::error_code ec;
            std::filesystem::remove_all(m_path, ec);
        }
    }
    const std::filesystem::path& path() const { return m_path; }

private:
    std::filesystem::path m_path;
};

std::string slurp(const std::filesystem::path& p)
{
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

struct IaslRun {
    int exit_code { -1 };
    std::string log;
    std::string dsl;
};

// Writes `table` to dir/name.dat and runs `iasl -d` on it.
IaslRun disassemble(const std::string& iasl, const TempDir& dir, const std::string& name, std::span<const uint8_t> table)
{
    auto dat = dir.path() / (name + ".dat");
    {
        std::ofstream out(dat, std::ios::binary);
        out.write(reinterpret_cast<const char*>(table.data()), static_cast<std::streamsize>(table.size()));
    }
    auto log = dir.path() / (name + ".log");
    std::string cmd = "cd '" + dir.path().string() + "' && '" + iasl + "' -d '" + name + ".dat' > '" + log.string()
        + "' 2>&1";
    int status = std::system(cmd.c_str());
    IaslRun run;
    run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    run.log = slurp(log);
    run.dsl = slurp(dir.path() / (name + ".dsl"));
    return run;
}

// Compiles dir/name.dsl back to AML with optimizations off (iasl -oa) and returns the AML, so a
// disassemble + recompile round trip can be compared byte for byte with what we emitted.
std::optional<Bytes> recompile(const std::string& iasl, const TempDir& dir, const std::string& name)
{
    std::string cmd = "cd '" + dir.path().string() + "' && '" + iasl + "' -oa -p '" + name + "-rec' '" + name
        + ".dsl' > '" + name + "-rec.log' 2>&1";
    int status = std::system(cmd.c_str());
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return std::nullopt;
    std::ifstream in(dir.path() / (name + "-rec.aml"), std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Everything after the 36-byte header (iasl writes its own creator id and checksum).
Bytes aml_body(std::span<const uint8_t> table) { return Bytes(table.begin() + 36, table.end()); }

bool has(const std::string& text, std::string_view needle) { return text.find(needle) != std::string::npos; }

} // namespace

#define REQUIRE_IASL(var)                                                           \
    auto var##_found = find_iasl();                                                 \
    if (!var##_found)                                                               \
        GTEST_SKIP() << "iasl (Debian package acpica-tools) not found in PATH";    \
    const std::string var = *var##_found

TEST(AcpiIasl, DisassemblesDsdt)
{
    REQUIRE_IASL(iasl);
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    Built b = build(standard_config(2));
    IaslRun run = disassemble(iasl, dir, "dsdt", b.tables["DSDT"]);
    ASSERT_EQ(run.exit_code, 0) << run.log;
    const std::string& dsl = run.dsl;
    ASSERT_FALSE(dsl.empty()) << run.log;
    EXPECT_FALSE(has(run.log, "rror")) << run.log;
    EXPECT_FALSE(has(run.log, "Warning")) << run.log;
    EXPECT_FALSE(has(dsl, "Incorrect checksum")) << dsl;
    EXPECT_TRUE(has(dsl, "Scope (\\_SB)")) << dsl;
    for (const char* needle : { "Device (COM1)", "Device (RTC)", "Device (KBD)", "Device (VR00)", "Device (VR01)",
                                "EisaId (\"PNP0501\")", "EisaId (\"PNP0B00\")", "EisaId (\"PNP0303\")",
                                "\"LNRO0005\"", "Name (_S5, Package (0x02)", "IO (Decode16,",
                                "0x03F8,             // Range Minimum", "Memory32Fixed (ReadWrite,",
                                "0xD0000000,         // Address Base", "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )",
                                "Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive, ,, )" })
        EXPECT_TRUE(has(dsl, needle)) << "missing " << needle << " in\n" << dsl;

    // ASL -> AML with iasl reproduces our byte code exactly.
    auto rec = recompile(iasl, dir, "dsdt");
    ASSERT_TRUE(rec.has_value()) << slurp(dir.path() / "dsdt-rec.log");
    EXPECT_EQ(aml_body(*rec), aml_body(b.tables["DSDT"]));
}

TEST(AcpiIasl, DisassemblesDsdtWithManyDevices)
{
    // 200 virtio devices push \_SB_'s PkgLength to three bytes.
    REQUIRE_IASL(iasl);
    TempDir dir;
    AcpiConfig cfg { 8, legacy_acpi_devices() };
    for (uint32_t i = 0; i < 200; ++i)
        cfg.devices.push_back(virtio_mmio_acpi_device(i, layout::kVirtioMmioBase + i * 0x1000, 0x1000, 5 + i % 19));
    Bytes dsdt = build_dsdt(cfg).value();
    ASSERT_GT(dsdt.size(), 4096u);
    IaslRun run = disassemble(iasl, dir, "dsdt", dsdt);
    ASSERT_EQ(run.exit_code, 0) << run.log;
    EXPECT_FALSE(has(run.log, "Warning")) << run.log;
    EXPECT_TRUE(has(run.dsl, "Device (VRC7)")) << run.dsl;
    EXPECT_TRUE(has(run.dsl, "Name (_S5, Package (0x02)")) << run.dsl;
    auto rec = recompile(iasl, dir, "dsdt");
    ASSERT_TRUE(rec.has_value()) << slurp(dir.path() / "dsdt-rec.log");
    EXPECT_EQ(aml_body(*rec), aml_body(dsdt));
}

// The RSDP is not included: iasl -d (20200925) only disassembles tables with a standard header.
TEST(AcpiIasl, DisassemblesDataTables)
{
    REQUIRE_IASL(iasl);
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    Built b = build(standard_config(3));
    struct Expect {
        std::string file;
        Bytes table;
        std::vector<std::string> needles;
    };
    std::vector<Expect> cases {
        { "xsdt", b.xsdt, { "Signature : \"XSDT\"", "ACPI Table Address 0 :", "ACPI Table Address 1 :" } },
        { "facp",
          b.tables["FACP"],
          { "Signature : \"FACP\"", "Revision : 06", "Hardware Reduced (V5) : 1", "Reset Register Supported (V2) : 1",
            "Value to cause reset : 01", "FADT Minor Revision : 03", "DSDT Address : 00000000000E",
            "Sleep Control Register : [Generic Address Structure]", "Address : 00000000000003C0",
            "Address : 00000000000003C1", "Address : 00000000000003C2", "Hypervisor ID : 00004C4553534556" } },
        { "apic",
          b.tables["APIC"],
          { "Signature : \"APIC\"", "Local Apic Address : FEE00000", "Subtable Type : 00 [Processor Local APIC]",
            "Subtable Type : 01 [I/O APIC]", "Subtable Type : 02 [Interrupt Source Override]",
            "Subtable Type : 04 [Local APIC NMI]", "Address : FEC00000", "I/O Apic ID : 03",
            "Interrupt Input LINT : 01", "Local Apic ID : 02" } },
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.file);
        IaslRun run = disassemble(iasl, dir, c.file, c.table);
        ASSERT_EQ(run.exit_code, 0) << run.log;
        // iasl aligns the values in columns; compare with runs of spaces squeezed.
        std::string squeezed;
        for (char ch : run.dsl) {
            if (ch == ' ' && !squeezed.empty() && squeezed.back() == ' ')
                continue;
            squeezed.push_back(ch);
        }
        EXPECT_FALSE(has(run.log, "Warning")) << run.log;
        EXPECT_FALSE(has(squeezed, "Incorrect")) << run.dsl;
        EXPECT_FALSE(has(squeezed, "Invalid")) << run.dsl;
        for (const auto& needle : c.needles)
            EXPECT_TRUE(has(squeezed, needle)) << "missing " << needle << " in\n" << run.dsl;
    }
}

TEST(AcpiIasl, DisassemblesVmGenIdAndGed)
{
    REQUIRE_IASL(iasl);
    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    Built b = build(vmgenid_config(2));
    IaslRun run = disassemble(iasl, dir, "dsdt", b.tables["DSDT"]);
    ASSERT_EQ(run.exit_code, 0) << run.log;
    EXPECT_FALSE(has(run.log, "rror")) << run.log;
    EXPECT_FALSE(has(run.log, "Warning")) << run.log;
    // Compare without iasl's "// _HID: Hardware ID" line comments, whitespace squeezed to one space.
    std::string dsl;
    std::istringstream lines(run.dsl);
    for (std::string line; std::getline(lines, line);) {
        for (char c : line.substr(0, line.find("//")) + ' ') {
            if ((c == ' ' || c == '\t') && (dsl.empty() || dsl.back() == ' '))
                continue;
            dsl.push_back(c == '\t' ? ' ' : c);
        }
    }
    for (const char* needle : {
             "Device (VGEN) { Name (_HID, \"VMGENCTR\")",
             "Name (_CID, \"VM_GEN_COUNTER\")",
             "Name (_DDN, \"VM_GEN_COUNTER\")",
             "Method (ADDR, 0, NotSerialized) { Return (Package (0x02) { 0x000FE000, Zero }) }",
             "Device (GED0) { Name (_HID, \"ACPI0013\" /* Generic Event Device */)",
             "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) { 0x0000000D, }",
             "Method (_EVT, 1, NotSerialized) { If ((Arg0 == 0x0D)) { Notify (\\_SB.VGEN, 0x80)",
         })
        EXPECT_TRUE(has(dsl, needle)) << "missing " << needle << " in\n" << run.dsl;

    // ASL -> AML reproduces our byte code; iasl refuses "VMGENCTR" as a _HID (not "NNNN####" with
    // hex digits), which is the id Linux's driver matches, so the recompile is forced past that.
    std::string cmd
        = "cd '" + dir.path().string() + "' && '" + iasl + "' -f -oa -p dsdt-rec dsdt.dsl > dsdt-rec.log 2>&1";
    [[maybe_unused]] int status = std::system(cmd.c_str());
    std::string log = slurp(dir.path() / "dsdt-rec.log");
    std::ifstream in(dir.path() / "dsdt-rec.aml", std::ios::binary);
    Bytes rec((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(rec.empty()) << log;
    EXPECT_EQ(aml_body(rec), aml_body(b.tables["DSDT"])) << log;
}

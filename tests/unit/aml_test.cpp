#include <gtest/gtest.h>

#include <cstring>

#include "arch/x86/aml.h"

using namespace vessel;
using aml::Bytes;

namespace {

// Decodes a PkgLength at the start of `bytes`; returns {value, bytes used}.
std::pair<uint32_t, size_t> decode_pkg_length(std::span<const uint8_t> bytes)
{
    unsigned follow = bytes[0] >> 6;
    if (follow == 0)
        return { bytes[0] & 0x3fu, 1 };
    uint32_t value = bytes[0] & 0x0fu;
    for (unsigned i = 0; i < follow; ++i)
        value |= static_cast<uint32_t>(bytes[1 + i]) << (4 + 8 * i);
    return { value, 1 + follow };
}

Bytes seg(const char* s) { return Bytes(s, s + 4); }

Bytes cat(std::initializer_list<Bytes> parts)
{
    Bytes out;
    for (const auto& p : parts)
        out.insert(out.end(), p.begin(), p.end());
    return out;
}

} // namespace

TEST(Aml, PkgLengthOneByteUpTo63)
{
    EXPECT_EQ(aml::encode_pkg_length(0).value(), (Bytes { 0x00 }));
    EXPECT_EQ(aml::encode_pkg_length(5).value(), (Bytes { 0x05 }));
    EXPECT_EQ(aml::encode_pkg_length(63).value(), (Bytes { 0x3f }));
}

TEST(Aml, PkgLengthTwoBytes64To4095)
{
    // Lead byte: 01 in bits 7-6, low nibble of the value; then value >> 4.
    EXPECT_EQ(aml::encode_pkg_length(64).value(), (Bytes { 0x40, 0x04 }));
    EXPECT_EQ(aml::encode_pkg_length(0x123).value(), (Bytes { 0x43, 0x12 }));
    EXPECT_EQ(aml::encode_pkg_length(4095).value(), (Bytes { 0x4f, 0xff }));
}

TEST(Aml, PkgLengthThreeAndFourBytes)
{
    EXPECT_EQ(aml::encode_pkg_length(4096).value(), (Bytes { 0x80, 0x00, 0x01 }));
    EXPECT_EQ(aml::encode_pkg_length(0xfffff).value(), (Bytes { 0x8f, 0xff, 0xff }));
    EXPECT_EQ(aml::encode_pkg_length(0x100000).value(), (Bytes { 0xc0, 0x00, 0x00, 0x01 }));
    EXPECT_EQ(aml::encode_pkg_length(0x0fffffff).value(), (Bytes { 0xcf, 0xff, 0xff, 0xff }));
    EXPECT_FALSE(aml::encode_pkg_length(0x10000000).ok());
}

TEST(Aml, PkgLengthRoundTrips)
{
    for (uint32_t v : { 0u, 1u, 62u, 63u, 64u, 65u, 255u, 256u, 4094u, 4095u, 4096u, 4097u, 65535u, 0xfffffu,
                        0x100000u, 0x123456u, 0x0fffffffu }) {
        Bytes enc = aml::encode_pkg_length(v).value();
        auto [decoded, used] = decode_pkg_length(enc);
        EXPECT_EQ(decoded, v);
        EXPECT_EQ(used, enc.size());
    }
}

TEST(Aml, PkgLengthForBodyCountsItself)
{
    // 62 + 1 = 63 still fits one byte; 63 + 1 = 64 does not, so 63 + 2 = 65 in two bytes.
    EXPECT_EQ(aml::pkg_length_for_body(0).value(), (Bytes { 0x01 }));
    EXPECT_EQ(aml::pkg_length_for_body(62).value(), (Bytes { 0x3f }));
    EXPECT_EQ(aml::pkg_length_for_body(63).value(), aml::encode_pkg_length(65).value());
    EXPECT_EQ(aml::pkg_length_for_body(4093).value(), aml::encode_pkg_length(4095).value());
    EXPECT_EQ(aml::pkg_length_for_body(4094).value(), aml::encode_pkg_length(4097).value());
    EXPECT_EQ(aml::pkg_length_for_body(0xffffc).value(), aml::encode_pkg_length(0xfffff).value());
    EXPECT_EQ(aml::pkg_length_for_body(0xffffd).value(), aml::encode_pkg_length(0x100001).value());
    EXPECT_FALSE(aml::pkg_length_for_body(0x0ffffffc).ok());
    for (uint64_t body = 0; body < 70000; body += 7) {
        Bytes enc = aml::pkg_length_for_body(body).value();
        auto [value, used] = decode_pkg_length(enc);
        ASSERT_EQ(used, enc.size());
        ASSERT_EQ(value, body + used) << "body " << body;
    }
}

TEST(Aml, IntegerEncodings)
{
    EXPECT_EQ(aml::integer(0), (Bytes { 0x00 }));
    EXPECT_EQ(aml::integer(1), (Bytes { 0x01 }));
    EXPECT_EQ(aml::integer(2), (Bytes { 0x0a, 0x02 }));
    EXPECT_EQ(aml::integer(0xff), (Bytes { 0x0a, 0xff }));
    EXPECT_EQ(aml::integer(0x100), (Bytes { 0x0b, 0x00, 0x01 }));
    EXPECT_EQ(aml::integer(0xffff), (Bytes { 0x0b, 0xff, 0xff }));
    EXPECT_EQ(aml::integer(0x10000), (Bytes { 0x0c, 0x00, 0x00, 0x01, 0x00 }));
    EXPECT_EQ(aml::integer(0xfee00000), (Bytes { 0x0c, 0x00, 0x00, 0xe0, 0xfe }));
    EXPECT_EQ(aml::integer(0x100000000ULL), (Bytes { 0x0e, 0, 0, 0, 0, 1, 0, 0, 0 }));
    EXPECT_EQ(aml::integer(~0ULL), (Bytes { 0x0e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff }));
    EXPECT_EQ(aml::dword(5), (Bytes { 0x0c, 0x05, 0x00, 0x00, 0x00 }));
}

TEST(Aml, Strings)
{
    EXPECT_EQ(aml::string("LNRO0005").value(), cat({ { 0x0d }, Bytes { 'L', 'N', 'R', 'O', '0', '0', '0', '5' }, { 0 } }));
    EXPECT_EQ(aml::string("").value(), (Bytes { 0x0d, 0x00 }));
    EXPECT_FALSE(aml::string(std::string_view("a\0b", 3)).ok());
    EXPECT_FALSE(aml::string("caf\xc3\xa9").ok());
}

TEST(Aml, NameSegsArePadded)
{
    EXPECT_EQ(aml::name_seg("COM1").value(), seg("COM1"));
    EXPECT_EQ(aml::name_seg("_S5").value(), seg("_S5_"));
    EXPECT_EQ(aml::name_seg("A").value(), seg("A___"));
    EXPECT_FALSE(aml::name_seg("").ok());
    EXPECT_FALSE(aml::name_seg("ABCDE").ok());
    EXPECT_FALSE(aml::name_seg("1ABC").ok());
    EXPECT_FALSE(aml::name_seg("com1").ok());
    EXPECT_FALSE(aml::name_seg("A-B").ok());
}

TEST(Aml, NameStrings)
{
    EXPECT_EQ(aml::name_string("_HID").value(), seg("_HID"));
    EXPECT_EQ(aml::name_string("\\_SB_").value(), cat({ { 0x5c }, seg("_SB_") }));
    EXPECT_EQ(aml::name_string("\\_SB.COM1").value(), cat({ { 0x5c, 0x2e }, seg("_SB_"), seg("COM1") }));
    EXPECT_EQ(aml::name_string("A.B.C").value(), cat({ { 0x2f, 0x03 }, seg("A___"), seg("B___"), seg("C___") }));
    EXPECT_EQ(aml::name_string("^^FOO").value(), cat({ { 0x5e, 0x5e }, seg("FOO_") }));
    EXPECT_EQ(aml::name_string("\\").value(), (Bytes { 0x5c, 0x00 }));
    EXPECT_FALSE(aml::name_string("").ok());
    EXPECT_FALSE(aml::name_string("A..B").ok());
    EXPECT_FALSE(aml::name_string("A.").ok());
    EXPECT_FALSE(aml::name_string("\\^A").ok());
    EXPECT_FALSE(aml::name_string("TOOLONG").ok());
}

TEST(Aml, EisaIdCompression)
{
    EXPECT_TRUE(aml::is_eisa_id("PNP0501"));
    EXPECT_FALSE(aml::is_eisa_id("LNRO0005"));
    EXPECT_FALSE(aml::is_eisa_id("pnp0501"));
    EXPECT_FALSE(aml::is_eisa_id("PNP05G1"));
    EXPECT_FALSE(aml::is_eisa_id("PN00501"));
    EXPECT_EQ(aml::eisa_id("PNP0501").value(), 0x0105D041u);
    EXPECT_EQ(aml::eisa_id("PNP0B00").value(), 0x000BD041u);
    EXPECT_EQ(aml::eisa_id("PNP0303").value(), 0x0303D041u);
    EXPECT_EQ(aml::eisa_id("PNP0A03").value(), 0x030AD041u);
    EXPECT_EQ(aml::eisa_id("ZZZFFFF").value(), 0xFFFF5A6Bu);
    EXPECT_FALSE(aml::eisa_id("PNP050").ok());
}

TEST(Aml, NameAndPackage)
{
    Bytes s5 = aml::package({ aml::integer(5), aml::integer(0) }).value();
    EXPECT_EQ(s5, (Bytes { 0x12, 0x05, 0x02, 0x0a, 0x05, 0x00 }));
    EXPECT_EQ(aml::name("_S5", s5).value(), cat({ { 0x08 }, seg("_S5_"), s5 }));
    EXPECT_EQ(aml::package({}).value(), (Bytes { 0x12, 0x02, 0x00 }));
    EXPECT_FALSE(aml::package(std::vector<Bytes>(256, aml::integer(0))).ok());
}

TEST(Aml, ScopeAndDeviceLengths)
{
    Bytes empty_dev = aml::device("COM1", {}).value();
    EXPECT_EQ(empty_dev, cat({ { 0x5b, 0x82, 0x05 }, seg("COM1") }));

    // A body that pushes the PkgLength into two and three bytes.
    for (size_t body_size : { 58u, 59u, 60u, 4089u, 4090u, 4091u, 5000u }) {
        Bytes body(body_size, 0xa3); // opaque terms
        Bytes scope = aml::scope("\\_SB_", body).value();
        ASSERT_EQ(scope[0], 0x10);
        auto [len, used] = decode_pkg_length(std::span(scope).subspan(1));
        EXPECT_EQ(len, scope.size() - 1) << body_size;
        EXPECT_EQ(scope.size(), 1 + used + 5 + body_size);
        Bytes dev = aml::device("DEV0", body).value();
        ASSERT_EQ(dev[0], 0x5b);
        ASSERT_EQ(dev[1], 0x82);
        auto [dlen, dused] = decode_pkg_length(std::span(dev).subspan(2));
        EXPECT_EQ(dlen, dev.size() - 2) << body_size;
        EXPECT_EQ(dev.size(), 2 + dused + 4 + body_size);
    }
}

TEST(Aml, BufferHasSizePrefix)
{
    const uint8_t data[] = { 1, 2, 3 };
    EXPECT_EQ(aml::buffer(data).value(), (Bytes { 0x11, 0x06, 0x0a, 0x03, 1, 2, 3 }));
    Bytes big(300, 0x55);
    Bytes buf = aml::buffer(big).value();
    // 0x11, PkgLength (2 bytes), WordPrefix 300, data.
    EXPECT_EQ(buf.size(), 1u + 2 + 3 + 300);
    EXPECT_EQ(buf[3], 0x0b);
    EXPECT_EQ(buf[4] | (buf[5] << 8), 300);
    EXPECT_EQ(decode_pkg_length(std::span(buf).subspan(1)).first, buf.size() - 1);
}

TEST(Aml, ResourceDescriptors)
{
    EXPECT_EQ(aml::io_decode16(0x3f8, 0x3f8, 1, 8), (Bytes { 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08 }));
    EXPECT_EQ(aml::memory32_fixed(0xd0000000, 0x1000),
              (Bytes { 0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x10, 0x00, 0x00 }));
    EXPECT_EQ(aml::memory32_fixed(0x1000, 0x10, false)[3], 0x00);

    const uint32_t com[] = { 4 };
    EXPECT_EQ(aml::extended_interrupt(com, aml::InterruptTrigger::Edge, aml::InterruptPolarity::ActiveHigh).value(),
              (Bytes { 0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0x00, 0x00, 0x00 }));
    const uint32_t two[] = { 5, 0x17 };
    EXPECT_EQ(aml::extended_interrupt(two, aml::InterruptTrigger::Level, aml::InterruptPolarity::ActiveLow, true)
                  .value(),
              (Bytes { 0x89, 0x0a, 0x00, 0x0d, 0x02, 0x05, 0, 0, 0, 0x17, 0, 0, 0 }));
    EXPECT_FALSE(
        aml::extended_interrupt({}, aml::InterruptTrigger::Edge, aml::InterruptPolarity::ActiveHigh).ok());
}

TEST(Aml, ResourceTemplateEndsWithEndTag)
{
    EXPECT_EQ(aml::resource_template({}).value(), (Bytes { 0x11, 0x05, 0x0a, 0x02, 0x79, 0x00 }));
    Bytes io = aml::io_decode16(0x70, 0x70, 1, 2);
    Bytes rt = aml::resource_template(io).value();
    EXPECT_EQ(rt, cat({ { 0x11, 0x0d, 0x0a, 0x0a }, io, { 0x79, 0x00 } }));
}

TEST(Aml, ArgsAndLocals)
{
    EXPECT_EQ(aml::arg(0).value(), (Bytes { 0x68 }));
    EXPECT_EQ(aml::arg(6).value(), (Bytes { 0x6e }));
    EXPECT_FALSE(aml::arg(7).ok());
    EXPECT_EQ(aml::local(0).value(), (Bytes { 0x60 }));
    EXPECT_EQ(aml::local(7).value(), (Bytes { 0x67 }));
    EXPECT_FALSE(aml::local(8).ok());
}

TEST(Aml, MethodFlagsAndLength)
{
    // Method(_EVT, 1, NotSerialized) {}: MethodOp, PkgLength 6, "_EVT", flags 0x01.
    EXPECT_EQ(aml::method("_EVT", 1, aml::MethodSerialize::NotSerialized, {}).value(),
        cat({ { 0x14, 0x06 }, seg("_EVT"), { 0x01 } }));
    // Serialized sets bit 3; SyncLevel stays 0.
    EXPECT_EQ(aml::method("M", 7, aml::MethodSerialize::Serialized, {}).value(),
        cat({ { 0x14, 0x06 }, seg("M___"), { 0x0f } }));
    EXPECT_FALSE(aml::method("M", 8, aml::MethodSerialize::NotSerialized, {}).ok());
    EXPECT_FALSE(aml::method("bad", 0, aml::MethodSerialize::NotSerialized, {}).ok());
    // A long body takes a two-byte PkgLength.
    Bytes body(100, 0xa3);
    Bytes m = aml::method("LONG", 0, aml::MethodSerialize::NotSerialized, body).value();
    auto [len, used] = decode_pkg_length(std::span(m).subspan(1));
    EXPECT_EQ(used, 2u);
    EXPECT_EQ(len, m.size() - 1);
}

TEST(Aml, ReturnPackage)
{
    // Method(ADDR) { Return (Package() { 0xfe000, Zero }) }, as the VM generation ID's ADDR.
    Bytes pkg = aml::package({ aml::integer(0xfe000), aml::integer(0) }).value();
    EXPECT_EQ(pkg, (Bytes { 0x12, 0x08, 0x02, 0x0c, 0x00, 0xe0, 0x0f, 0x00, 0x00 }));
    Bytes ret = aml::return_(pkg);
    EXPECT_EQ(ret, cat({ { 0xa4 }, pkg }));
    EXPECT_EQ(aml::method("ADDR", 0, aml::MethodSerialize::NotSerialized, ret).value(),
        cat({ { 0x14, 0x10 }, seg("ADDR"), { 0x00 }, ret }));
    EXPECT_EQ(aml::return_(aml::arg(1).value()), (Bytes { 0xa4, 0x69 }));
}

TEST(Aml, IfLEqualNotify)
{
    Bytes eq = aml::lequal(aml::arg(0).value(), aml::integer(13));
    EXPECT_EQ(eq, (Bytes { 0x93, 0x68, 0x0a, 0x0d }));
    // Notify(\_SB_.VGEN, 0x80): NotifyOp, '\' DualNamePrefix _SB_ VGEN, BytePrefix 0x80.
    Bytes n = aml::notify("\\_SB_.VGEN", aml::integer(0x80)).value();
    EXPECT_EQ(n, cat({ { 0x86, 0x5c, 0x2e }, seg("_SB_"), seg("VGEN"), { 0x0a, 0x80 } }));
    EXPECT_EQ(aml::notify("VGEN", aml::integer(1)).value(), cat({ { 0x86 }, seg("VGEN"), { 0x01 } }));
    EXPECT_FALSE(aml::notify("\\_SB_.", aml::integer(1)).ok());
    // If (Arg0 == 13) { Notify(...) }: IfOp, PkgLength (1 + 4 + 13 = 18), predicate, terms.
    Bytes i = aml::if_(eq, n).value();
    EXPECT_EQ(i, cat({ { 0xa0, 0x12 }, eq, n }));
    EXPECT_EQ(aml::if_(aml::integer(1), {}).value(), (Bytes { 0xa0, 0x02, 0x01 }));
    Bytes long_terms(70, 0xa3);
    Bytes li = aml::if_(aml::integer(0), long_terms).value();
    EXPECT_EQ(decode_pkg_length(std::span(li).subspan(1)), std::make_pair(uint32_t(li.size() - 1), size_t { 2 }));
}

#include "arch/x86/aml.h"

#include <string>

namespace vessel::aml {

namespace {

bool is_lead_name_char(char c) { return (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_lead_name_char(c) || (c >= '0' && c <= '9'); }

int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void put_le(Bytes& out, uint64_t value, unsigned bytes)
{
    for (unsigned i = 0; i < bytes; ++i)
        out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

// opcode(s) PkgLength body: the shape of Scope, Device, Method, If, Package and Buffer.
Result<Bytes> wrap_package(std::span<const uint8_t> opcode, std::span<const uint8_t> body)
{
    Bytes out(opcode.begin(), opcode.end());
    append(out, TRY(pkg_length_for_body(body.size())));
    append(out, body);
    return out;
}

} // namespace

void append(Bytes& out, std::span<const uint8_t> more) { out.insert(out.end(), more.begin(), more.end()); }

Result<Bytes> encode_pkg_length(uint32_t value)
{
    if (value > kMaxPkgLength)
        return make_error("AML PkgLength {} exceeds the 28-bit maximum {}", value, kMaxPkgLength);
    if (value <= 0x3f)
        return Bytes { static_cast<uint8_t>(value) };
    // Multi-byte form: bits 7-6 of the lead byte = count of following bytes, bits 3-0 = the
    // low nibble of the value, each following byte the next 8 bits.
    unsigned follow = value <= 0xfff ? 1 : value <= 0xfffff ? 2 : 3;
    Bytes out;
    out.push_back(static_cast<uint8_t>((follow << 6) | (value & 0x0f)));
    for (unsigned i = 0; i < follow; ++i)
        out.push_back(static_cast<uint8_t>(value >> (4 + 8 * i)));
    return out;
}

Result<Bytes> pkg_length_for_body(uint64_t body_size)
{
    // Smallest n (1..4) such that body + n fits an n-byte PkgLength.
    constexpr uint64_t kLimits[] = { 0x3f, 0xfff, 0xfffff, kMaxPkgLength };
    for (unsigned n = 1; n <= 4; ++n) {
        if (body_size + n <= kLimits[n - 1])
            return encode_pkg_length(static_cast<uint32_t>(body_size + n));
    }
    return make_error("AML package body of {} bytes is too large for a PkgLength", body_size);
}

Bytes integer(uint64_t value)
{
    Bytes out;
    if (value == 0) {
        out.push_back(kZeroOp);
    } else if (value == 1) {
        out.push_back(kOneOp);
    } else if (value <= 0xff) {
        out.push_back(kBytePrefix);
        put_le(out, value, 1);
    } else if (value <= 0xffff) {
        out.push_back(kWordPrefix);
        put_le(out, value, 2);
    } else if (value <= 0xffffffff) {
        out.push_back(kDWordPrefix);
        put_le(out, value, 4);
    } else {
        out.push_back(kQWordPrefix);
        put_le(out, value, 8);
    }
    return out;
}

Bytes dword(uint32_t value)
{
    Bytes out { kDWordPrefix };
    put_le(out, value, 4);
    return out;
}

Result<Bytes> string(std::string_view text)
{
    Bytes out { kStringPrefix };
    for (char c : text) {
        auto byte = static_cast<unsigned char>(c);
        if (byte == 0 || byte > 0x7f)
            return make_error("AML string {:?} has a character outside ASCII 0x01..0x7f", std::string(text));
        out.push_back(byte);
    }
    out.push_back(0);
    return out;
}

Result<Bytes> name_seg(std::string_view segment)
{
    if (segment.empty() || segment.size() > 4)
        return make_error("AML name segment {:?} must be 1 to 4 characters", std::string(segment));
    if (!is_lead_name_char(segment[0]))
        return make_error("AML name segment {:?} must start with A-Z or '_'", std::string(segment));
    for (char c : segment) {
        if (!is_name_char(c))
            return make_error("AML name segment {:?} may only hold A-Z, 0-9 and '_'", std::string(segment));
    }
    Bytes out(segment.begin(), segment.end());
    out.resize(4, '_');
    return out;
}

Result<Bytes> name_string(std::string_view path)
{
    Bytes out;
    std::string_view rest = path;
    if (!rest.empty() && rest[0] == '\\') {
        out.push_back(kRootChar);
        rest.remove_prefix(1);
    } else {
        while (!rest.empty() && rest[0] == '^') {
            out.push_back(kParentPrefix);
            rest.remove_prefix(1);
        }
    }
    std::vector<Bytes> segments;
    while (!rest.empty()) {
        size_t dot = rest.find('.');
        std::string_view seg = rest.substr(0, dot);
        auto encoded = name_seg(seg);
        if (!encoded.ok())
            return encoded.release_error().with_context(fmt::format("AML name {:?}", std::string(path)));
        segments.push_back(encoded.release_value());
        if (dot == std::string_view::npos)
            break;
        rest.remove_prefix(dot + 1);
        if (rest.empty())
            return make_error("AML name {:?} ends with '.'", std::string(path));
    }
    if (segments.empty()) {
        if (out.empty())
            return make_error("AML name is empty");
        out.push_back(kNullName); // "\" alone names the root
        return out;
    }
    if (segments.size() > 255)
        return make_error("AML name {:?} has more than 255 segments", std::string(path));
    if (segments.size() == 2) {
        out.push_back(kDualNamePrefix);
    } else if (segments.size() > 2) {
        out.push_back(kMultiNamePrefix);
        out.push_back(static_cast<uint8_t>(segments.size()));
    }
    for (const auto& seg : segments)
        append(out, seg);
    return out;
}

bool is_eisa_id(std::string_view id)
{
    if (id.size() != 7)
        return false;
    for (size_t i = 0; i < 3; ++i) {
        if (id[i] < 'A' || id[i] > 'Z')
            return false;
    }
    for (size_t i = 3; i < 7; ++i) {
        if (hex_value(id[i]) < 0)
            return false;
    }
    return true;
}

Result<uint32_t> eisa_id(std::string_view id)
{
    if (!is_eisa_id(id))
        return make_error("{:?} is not an EISA id (three letters A-Z and four hex digits 0-9A-F)", std::string(id));
    // Three 5-bit letters ('A' = 1) packed big-endian into 16 bits, then the four hex digits;
    // stored as bytes in that order, so the little-endian DWORD reads backwards.
    auto letter = [&](size_t i) { return static_cast<uint32_t>(id[i] - 0x40) & 0x1f; };
    uint32_t vendor = (letter(0) << 10) | (letter(1) << 5) | letter(2);
    uint32_t product = 0;
    for (size_t i = 3; i < 7; ++i)
        product = (product << 4) | static_cast<uint32_t>(hex_value(id[i]));
    uint8_t bytes[4] = {
        static_cast<uint8_t>(vendor >> 8),
        static_cast<uint8_t>(vendor),
        static_cast<uint8_t>(product >> 8),
        static_cast<uint8_t>(product),
    };
    return static_cast<uint32_t>(bytes[0]) | (static_cast<uint32_t>(bytes[1]) << 8)
        | (static_cast<uint32_t>(bytes[2]) << 16) | (static_cast<uint32_t>(bytes[3]) << 24);
}

Result<Bytes> name(std::string_view path, std::span<const uint8_t> object)
{
    Bytes out { kNameOp };
    append(out, TRY(name_string(path)));
    append(out, object);
    return out;
}

Result<Bytes> scope(std::string_view path, std::span<const uint8_t> terms)
{
    Bytes body = TRY(name_string(path));
    append(body, terms);
    const uint8_t op[] = { kScopeOp };
    return wrap_package(op, body);
}

Result<Bytes> device(std::string_view path, std::span<const uint8_t> terms)
{
    Bytes body = TRY(name_string(path));
    append(body, terms);
    const uint8_t op[] = { kExtOpPrefix, kDeviceOp };
    return wrap_package(op, body);
}

Result<Bytes> package(const std::vector<Bytes>& elements)
{
    if (elements.size() > 255)
        return make_error("AML Package() of {} elements exceeds 255 (VarPackage is not supported)",
                          elements.size());
    Bytes body { static_cast<uint8_t>(elements.size()) };
    for (const auto& element : elements)
        append(body, element);
    const uint8_t op[] = { kPackageOp };
    return wrap_package(op, body);
}

Result<Bytes> buffer(std::span<const uint8_t> data)
{
    Bytes body = integer(data.size());
    append(body, data);
    const uint8_t op[] = { kBufferOp };
    return wrap_package(op, body);
}

Result<Bytes> method(
    std::string_view path, uint8_t arg_count, MethodSerialize serialize, std::span<const uint8_t> terms)
{
    if (arg_count > 7)
        return make_error("AML Method {:?} takes at most 7 arguments, not {}", std::string(path), arg_count);
    Bytes body = TRY(name_string(path));
    uint8_t flags = arg_count;
    if (serialize == MethodSerialize::Serialized)
        flags |= 0x08;
    body.push_back(flags); // SyncLevel 0
    append(body, terms);
    const uint8_t op[] = { kMethodOp };
    return wrap_package(op, body);
}

Bytes return_(std::span<const uint8_t> value)
{
    Bytes out { kReturnOp };
    append(out, value);
    return out;
}

Result<Bytes> if_(std::span<const uint8_t> predicate, std::span<const uint8_t> terms)
{
    Bytes body(predicate.begin(), predicate.end());
    append(body, terms);
    const uint8_t op[] = { kIfOp };
    return wrap_package(op, body);
}

Bytes lequal(std::span<const uint8_t> a, std::span<const uint8_t> b)
{
    Bytes out { kLEqualOp };
    append(out, a);
    append(out, b);
    return out;
}

Result<Bytes> notify(std::string_view path, std::span<const uint8_t> value)
{
    Bytes out { kNotifyOp };
    append(out, TRY(name_string(path)));
    append(out, value);
    return out;
}

Result<Bytes> arg(uint8_t n)
{
    if (n > 6)
        return make_error("AML has Arg0 to Arg6, not Arg{}", n);
    return Bytes { static_cast<uint8_t>(kArg0Op + n) };
}

Result<Bytes> local(uint8_t n)
{
    if (n > 7)
        return make_error("AML has Local0 to Local7, not Local{}", n);
    return Bytes { static_cast<uint8_t>(kLocal0Op + n) };
}

Bytes io_decode16(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length)
{
    Bytes out { 0x47, 0x01 }; // small item 0x08, length 7; information bit 0 = 16-bit decode
    put_le(out, min, 2);
    put_le(out, max, 2);
    out.push_back(alignment);
    out.push_back(length);
    return out;
}

Bytes memory32_fixed(uint32_t base, uint32_t length, bool writable)
{
    Bytes out { 0x86, 0x09, 0x00 }; // large item 0x06, length 9
    out.push_back(writable ? 0x01 : 0x00);
    put_le(out, base, 4);
    put_le(out, length, 4);
    return out;
}

Result<Bytes> extended_interrupt(std::span<const uint32_t> gsis, InterruptTrigger trigger,
                                 InterruptPolarity polarity, bool shared)
{
    if (gsis.empty() || gsis.size() > 255)
        return make_error("an Extended Interrupt descriptor takes 1 to 255 interrupts, not {}", gsis.size());
    uint16_t length = static_cast<uint16_t>(2 + 4 * gsis.size());
    Bytes out { 0x89 }; // large item 0x09
    put_le(out, length, 2);
    // Bit 0 consumer, bit 1 edge (0 = level), bit 2 active low, bit 3 shared.
    uint8_t flags = 0x01;
    if (trigger == InterruptTrigger::Edge)
        flags |= 0x02;
    if (polarity == InterruptPolarity::ActiveLow)
        flags |= 0x04;
    if (shared)
        flags |= 0x08;
    out.push_back(flags);
    out.push_back(static_cast<uint8_t>(gsis.size()));
    for (uint32_t gsi : gsis)
        put_le(out, gsi, 4);
    return out;
}

Result<Bytes> resource_template(std::span<const uint8_t> descriptors)
{
    Bytes data(descriptors.begin(), descriptors.end());
    // End Tag (small item 0x0f, length 1); checksum 0 means "treat as valid", as iasl emits.
    data.push_back(0x79);
    data.push_back(0x00);
    return buffer(data);
}

} // namespace vessel::aml

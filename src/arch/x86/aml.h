// A small AML (ACPI Machine Language) byte-code builder: just enough of ACPI 6.x chapter 20 to
// emit a DSDT with scopes, devices, named integers/strings/packages, resource templates and
// small control methods (Method, If, LEqual, Notify, Return).
// Every builder returns the encoded bytes of one term; callers concatenate them.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace vessel::aml {

using Bytes = std::vector<uint8_t>;

// Opcodes and prefixes (ACPI 6.x, 20.3 "AML Byte Stream Byte Values").
constexpr uint8_t kZeroOp = 0x00;
constexpr uint8_t kOneOp = 0x01;
constexpr uint8_t kNameOp = 0x08;
constexpr uint8_t kBytePrefix = 0x0a;
constexpr uint8_t kWordPrefix = 0x0b;
constexpr uint8_t kDWordPrefix = 0x0c;
constexpr uint8_t kStringPrefix = 0x0d;
constexpr uint8_t kQWordPrefix = 0x0e;
constexpr uint8_t kScopeOp = 0x10;
constexpr uint8_t kBufferOp = 0x11;
constexpr uint8_t kPackageOp = 0x12;
constexpr uint8_t kMethodOp = 0x14;
constexpr uint8_t kDualNamePrefix = 0x2e;
constexpr uint8_t kMultiNamePrefix = 0x2f;
constexpr uint8_t kExtOpPrefix = 0x5b;
constexpr uint8_t kDeviceOp = 0x82; // after kExtOpPrefix
constexpr uint8_t kLocal0Op = 0x60; // Local0..Local7: 0x60..0x67
constexpr uint8_t kArg0Op = 0x68; // Arg0..Arg6: 0x68..0x6e
constexpr uint8_t kNotifyOp = 0x86;
constexpr uint8_t kLEqualOp = 0x93;
constexpr uint8_t kIfOp = 0xa0;
constexpr uint8_t kReturnOp = 0xa4;
constexpr uint8_t kRootChar = 0x5c;   // '\'
constexpr uint8_t kParentPrefix = 0x5e; // '^'
constexpr uint8_t kNullName = 0x00;

// Largest value a PkgLength can carry (28 bits).
constexpr uint32_t kMaxPkgLength = 0x0fffffff;

// Appends `more` to `out`.
void append(Bytes& out, std::span<const uint8_t> more);

// Encodes `value` as a 1-4 byte PkgLength. `value` is the whole package length as the AML
// spec defines it: it counts the PkgLength bytes themselves plus everything after them.
// Values up to 63 take one byte, up to 4095 two, up to 1 MiB-1 three, up to 2^28-1 four.
Result<Bytes> encode_pkg_length(uint32_t value);

// The PkgLength for a package whose contents after the PkgLength are `body_size` bytes
// (picks the smallest encoding that can also count its own bytes).
Result<Bytes> pkg_length_for_body(uint64_t body_size);

// An Integer term in its shortest form: ZeroOp, OneOp, or Byte/Word/DWord/QWord prefix + value.
Bytes integer(uint64_t value);
// A DWordConst regardless of magnitude (EISA ids are conventionally DWords).
Bytes dword(uint32_t value);
// A String term: StringPrefix, ASCII characters 0x01..0x7f, NUL.
Result<Bytes> string(std::string_view text);

// One NameSeg: 1-4 characters, [A-Z_] first then [A-Z0-9_], padded with '_' to 4.
Result<Bytes> name_seg(std::string_view segment);
// A NameString: optional root '\' or parent '^' prefixes, then '.'-separated NameSegs
// ("\_SB_.COM1", "_S5", "^PCI0.ISA"). Encodes Dual/MultiNamePrefix as needed.
Result<Bytes> name_string(std::string_view path);

// True if `id` looks like a 7-character EISA/PNP id: three letters A-Z then four hex digits.
bool is_eisa_id(std::string_view id);
// The compressed 32-bit EISA id for "PNP0501" etc. (as ASL's EisaId() produces: 0x0105d041).
Result<uint32_t> eisa_id(std::string_view id);

// Name(path, object): NameOp NameString DataRefObject.
Result<Bytes> name(std::string_view path, std::span<const uint8_t> object);
// Scope(path) { terms }.
Result<Bytes> scope(std::string_view path, std::span<const uint8_t> terms);
// Device(path) { terms }.
Result<Bytes> device(std::string_view path, std::span<const uint8_t> terms);
// Package() { elements }: each element is an already-encoded data object (at most 255).
Result<Bytes> package(const std::vector<Bytes>& elements);
// Buffer() { data }: BufferOp PkgLength BufferSize ByteList.
Result<Bytes> buffer(std::span<const uint8_t> data);

// Control methods (ACPI 6.x, 20.2.5 "Term Objects Encoding").
enum class MethodSerialize : uint8_t { NotSerialized, Serialized };
// Method(path, args, NotSerialized/Serialized) { terms }: MethodOp PkgLength NameString
// MethodFlags (bits 0-2 argument count 0-7, bit 3 serialized, bits 4-7 SyncLevel 0) TermList.
Result<Bytes> method(
    std::string_view path, uint8_t arg_count, MethodSerialize serialize, std::span<const uint8_t> terms);
// Return(value): ReturnOp ArgObject (any TermArg: a data object, ArgN, LocalN, an expression).
Bytes return_(std::span<const uint8_t> value);
// If(predicate) { terms }: IfOp PkgLength Predicate TermList.
Result<Bytes> if_(std::span<const uint8_t> predicate, std::span<const uint8_t> terms);
// LEqual(a, b), ASL2.0 "a == b": LEqualOp Operand Operand.
Bytes lequal(std::span<const uint8_t> a, std::span<const uint8_t> b);
// Notify(object, value): NotifyOp NotifyObject (the NameString of `path`) NotifyValue (TermArg).
Result<Bytes> notify(std::string_view path, std::span<const uint8_t> value);
// ArgN (0-6) and LocalN (0-7), the method's arguments and locals.
Result<Bytes> arg(uint8_t n);
Result<Bytes> local(uint8_t n);

// Resource descriptors (ACPI 6.x, 6.4 "Resource Data Types for ACPI").
enum class InterruptTrigger : uint8_t { Level, Edge };
enum class InterruptPolarity : uint8_t { ActiveHigh, ActiveLow };

// IO(Decode16, min, max, alignment, length): small item 0x47, 8 bytes.
Bytes io_decode16(uint16_t min, uint16_t max, uint8_t alignment, uint8_t length);
// Memory32Fixed(ReadWrite/ReadOnly, base, length): large item 0x86, 12 bytes.
Bytes memory32_fixed(uint32_t base, uint32_t length, bool writable = true);
// Interrupt(ResourceConsumer, trigger, polarity, Exclusive/Shared) { gsis }: large item 0x89.
Result<Bytes> extended_interrupt(std::span<const uint32_t> gsis, InterruptTrigger trigger,
                                 InterruptPolarity polarity, bool shared = false);
// ResourceTemplate() { descriptors }: a Buffer of the descriptors plus an End Tag.
Result<Bytes> resource_template(std::span<const uint8_t> descriptors);

} // namespace vessel::aml

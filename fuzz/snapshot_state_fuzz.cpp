// The snapshot state file reader (snapshot/format.h) and the decoding of what it holds
// (snapshot/serialize.h). A checksum guards the file, but it is no secret: a hostile file carries
// a valid one. So the input is used two ways, chosen by its first byte:
//   - as a whole file (header, CBOR body, checksum): the container checks;
//   - as a CBOR body, wrapped here in a valid header and checksum: the depth limit, the CBOR
//     parser and every section's decoding (config, vCPUs, machine, CPUID, legacy devices).
// Nothing may crash, leak or read out of bounds; errors are values.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <xxhash.h>

#include "snapshot/format.h"
#include "snapshot/serialize.h"

using namespace vessel;

namespace {

template<typename T>
void decode_section(const nlohmann::json& doc, const char* key)
{
    (void)snapshot::read_as<T>(doc, key, "fuzz");
}

std::vector<uint8_t> wrap(const uint8_t* body, size_t size)
{
    std::vector<uint8_t> out(snapshot::kHeaderBytes);
    std::memcpy(out.data(), snapshot::kStateMagic, 8);
    auto put = [&](size_t at, uint64_t v, int n) {
        for (int i = 0; i < n; ++i)
            out[at + i] = static_cast<uint8_t>(v >> (8 * i));
    };
    put(8, snapshot::kFormatMajor, 4);
    put(12, snapshot::kFormatMinor, 4);
    put(16, size, 8);
    out.insert(out.end(), body, body + size);
    uint64_t sum = XXH64(out.data(), out.size(), 0);
    for (int i = 0; i < 8; ++i)
        out.push_back(static_cast<uint8_t>(sum >> (8 * i)));
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 1)
        return 0;
    std::vector<uint8_t> file = (data[0] & 1) ? std::vector<uint8_t>(data + 1, data + size) : wrap(data + 1, size - 1);
    auto doc = snapshot::decode_state(file.data(), file.size(), "fuzz");
    if (!doc.ok())
        return 0;
    decode_section<VmConfig>(*doc, "config");
    decode_section<std::vector<CpuState>>(*doc, "vcpus");
    decode_section<std::vector<CpuidTable>>(*doc, "cpuid");
    decode_section<MachineState>(*doc, "machine");
    if (doc->contains("devices")) {
        const auto& devices = (*doc)["devices"];
        decode_section<Serial::State>(devices, "serial");
        decode_section<I8042::State>(devices, "i8042");
        decode_section<Rtc::State>(devices, "rtc");
        decode_section<AcpiPm::State>(devices, "acpi_pm");
        decode_section<PostPort::State>(devices, "post");
    }
    // Whatever decoded must encode again.
    (void)snapshot::encode_state(*doc);
    return 0;
}

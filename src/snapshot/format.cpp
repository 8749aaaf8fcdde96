#include "snapshot/format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include <xxhash.h>

namespace vessel::snapshot {

namespace {

void put_le(std::vector<uint8_t>& out, uint64_t value, int bytes)
{
    for (int i = 0; i < bytes; ++i)
        out.push_back(static_cast<uint8_t>(value >> (8 * i)));
}

uint64_t get_be(const uint8_t* p, size_t bytes)
{
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i)
        v = (v << 8) | p[i];
    return v;
}

uint64_t get_le(const uint8_t* p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i)
        v = (v << 8) | p[i];
    return v;
}

// CBOR well-formedness, checked without recursion before nlohmann's reader (which recurses once
// per nesting level and once per chunk of an indefinite-length string: a file made to nest deeply
// would exhaust the stack, and its checksum is no secret). Vessel writes definite lengths only, so
// indefinite-length items are refused, and so is nesting deeper than kMaxDepth.
constexpr size_t kMaxDepth = 32;

Result<void> check_cbor(const uint8_t* data, size_t size)
{
    size_t pos = 0;
    std::vector<uint64_t> pending { 1 }; // items still to read at each open level
    while (!pending.empty()) {
        if (pending.back() == 0) {
            pending.pop_back();
            continue;
        }
        --pending.back();
        if (pos >= size)
            return make_error("the CBOR document ends early");
        uint8_t initial = data[pos++];
        unsigned major = initial >> 5, info = initial & 31;
        uint64_t arg = info;
        if (info >= 24 && info <= 27) {
            size_t n = size_t(1) << (info - 24);
            if (size - pos < n)
                return make_error("the CBOR document ends early");
            arg = get_be(data + pos, n);
            pos += n;
        } else if (info >= 28) {
            if (info == 31)
                return make_error("indefinite-length CBOR items are not used by Vessel (byte {})", pos - 1);
            return make_error("a reserved CBOR encoding at byte {}", pos - 1);
        }
        switch (major) {
        case 2:
        case 3:
            if (arg > size - pos)
                return make_error("a CBOR string runs past the end");
            pos += static_cast<size_t>(arg);
            break;
        case 4:
        case 5:
            if (pending.size() > kMaxDepth)
                return make_error("the state nests deeper than {} levels", kMaxDepth);
            if (arg > size - pos)
                return make_error("a CBOR container holds more items than there are bytes");
            pending.push_back(major == 5 ? arg * 2 : arg);
            break;
        case 6: ++pending.back(); break; // a tag: its item follows
        default: break; // integers, simple values, floats: the argument was all
        }
    }
    if (pos != size)
        return make_error("{} bytes follow the CBOR document", size - pos);
    return {};
}

Error fail(const std::string& origin, std::string_view why)
{
    return make_error("snapshot '{}': {}", origin, why);
}

} // namespace

std::vector<uint8_t> encode_state(const nlohmann::json& state)
{
    std::vector<uint8_t> body = nlohmann::json::to_cbor(state);
    std::vector<uint8_t> out(sizeof(kStateMagic));
    std::memcpy(out.data(), kStateMagic, sizeof(kStateMagic));
    out.reserve(kHeaderBytes + body.size() + kTrailerBytes);
    put_le(out, kFormatMajor, 4);
    put_le(out, kFormatMinor, 4);
    put_le(out, body.size(), 8);
    out.insert(out.end(), body.begin(), body.end());
    put_le(out, XXH64(out.data(), out.size(), 0), 8);
    return out;
}

Result<nlohmann::json> decode_state(const uint8_t* data, size_t size, const std::string& origin)
{
    if (size < kHeaderBytes + kTrailerBytes)
        return fail(origin, fmt::format("truncated: {} bytes, less than a header", size));
    if (std::memcmp(data, kStateMagic, sizeof(kStateMagic)) != 0)
        return fail(origin, "not a Vessel snapshot state file (wrong magic)");
    uint32_t major = static_cast<uint32_t>(get_le(data + 8, 4));
    uint32_t minor = static_cast<uint32_t>(get_le(data + 12, 4));
    if (major > kFormatMajor || (major == kFormatMajor && minor > kFormatMinor))
        return fail(origin,
            fmt::format("format version {}.{} is newer than this Vessel's {}.{}: use a newer Vessel", major, minor,
                kFormatMajor, kFormatMinor));
    if (major < kFormatMajor)
        return fail(origin,
            fmt::format("format version {}.{} is older than this Vessel reads ({}.x)", major, minor, kFormatMajor));
    uint64_t body = get_le(data + 16, 8);
    if (body > kMaxStateBytes || body + kHeaderBytes + kTrailerBytes != size)
        return fail(origin,
            fmt::format("truncated or padded: the header says {} bytes of state, the file holds {}", body,
                size >= kHeaderBytes + kTrailerBytes ? size - kHeaderBytes - kTrailerBytes : 0));
    uint64_t want = get_le(data + kHeaderBytes + body, 8);
    uint64_t have = XXH64(data, kHeaderBytes + body, 0);
    if (want != have)
        return fail(origin,
            fmt::format("checksum mismatch (stored {:#018x}, computed {:#018x}): the file is corrupt", want, have));
    if (auto well_formed = check_cbor(data + kHeaderBytes, body); !well_formed.ok())
        return fail(origin, fmt::format("the state does not decode: {}", well_formed.error().message()));
    auto doc = nlohmann::json::from_cbor(data + kHeaderBytes, data + kHeaderBytes + body, true, false);
    if (doc.is_discarded())
        return fail(origin, "the state does not decode (CBOR)");
    if (!doc.is_object())
        return fail(origin, "the state is not a map");
    return doc;
}

Result<void> write_state_file(const std::string& path, const nlohmann::json& state)
{
    std::vector<uint8_t> bytes = encode_state(state);
    std::filesystem::path target(path);
    std::string tmp = (target.parent_path() / ("." + target.filename().string() + ".tmp")).string();
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return Error::from_errno(fmt::format("snapshot '{}': cannot create '{}'", path, tmp));
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            auto err = Error::from_errno(fmt::format("snapshot '{}': writing", path));
            ::close(fd);
            ::unlink(tmp.c_str());
            return err;
        }
        done += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0) {
        auto err = Error::from_errno(fmt::format("snapshot '{}': fsync", path));
        ::close(fd);
        ::unlink(tmp.c_str());
        return err;
    }
    ::close(fd);
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        auto err = Error::from_errno(fmt::format("snapshot '{}': rename", path));
        ::unlink(tmp.c_str());
        return err;
    }
    return {};
}

Result<nlohmann::json> read_state_file(const std::string& path)
{
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return Error::from_errno(fmt::format("snapshot '{}': cannot open", path));
    struct stat st { };
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        return fail(path, "not a regular file");
    }
    if (static_cast<uint64_t>(st.st_size) > kMaxStateBytes + kHeaderBytes + kTrailerBytes) {
        ::close(fd);
        return fail(path,
            fmt::format("{} bytes is larger than any state file ({} at most)", st.st_size,
                kMaxStateBytes + kHeaderBytes + kTrailerBytes));
    }
    std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
    size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += static_cast<size_t>(n);
    }
    ::close(fd);
    if (done != bytes.size())
        return fail(path, "could not read the whole file");
    return decode_state(bytes.data(), bytes.size(), path);
}

} // namespace vessel::snapshot

// The MMDS data store: one JSON document the host sets through the API (PUT replaces it, PATCH
// merges into it) and the guest reads by path over HTTP. Behaves as Firecracker's
// src/vmm/src/mmds/data_store.rs: any JSON value may be stored, the compact serialization must not
// exceed a size limit (51200 bytes by default), PATCH is an RFC 7396 merge patch and needs a PUT
// first, and the guest's lookups use JSON-pointer paths with IMDS or JSON output.
//
// Thread-safe: the API thread writes while the net devices' I/O threads read; one mutex guards
// everything (documents are small and lookups short).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "base/result.h"

namespace vessel::mmds {

// MMDS V1 answers every GET; V2 wants a session token (see token_authority.h).
enum class Version { V1, V2 };

// IMDS: object keys one per line (a trailing '/' on keys holding objects), strings raw.
// Json: the value serialized compactly.
enum class OutputFormat { Json, Imds };

constexpr size_t kDefaultSizeLimit = 51200;

// serde_json's default recursion limit, which Firecracker inherits: deeper documents are refused.
// Also keeps our recursive serializer and merge patch far from the stack's end.
constexpr size_t kMaxJsonDepth = 128;

// Firecracker's texts for the errors (displaydoc of MmdsDatastoreError). The API adds its own
// prefixes ("MMDS error: ", "MMDS limit exceeded error: ").
inline constexpr std::string_view kNotInitializedMessage = "The MMDS data store is not initialized.";
inline constexpr std::string_view kLimitExceededMessage = "The MMDS patch request doesn't fit.";
inline constexpr std::string_view kUnsupportedValueMessage
    = "Cannot retrieve value. The value has an unsupported type.";

// True if `error` is the size-limit error of put()/patch() (the API answers it with 413).
bool is_limit_exceeded(const Error& error);
// True if `error` says PATCH came before any PUT.
bool is_not_initialized(const Error& error);

// Parses JSON text without exceptions, refusing nesting deeper than kMaxJsonDepth. The error
// carries the parser's message (for the API's "An error occurred when deserializing..." fault).
Result<nlohmann::json> parse_json(std::string_view text);

// Compact serialization as the guest and the API see it (keys sorted; invalid UTF-8 in strings,
// which only a caller building values by hand can produce, is replaced rather than thrown on).
std::string to_compact_json(const nlohmann::json& value);

// The outcome of a guest lookup: the body to send, or why there is none.
struct Lookup {
    enum class Status { Ok, NotFound, UnsupportedType };
    Status status { Status::NotFound };
    std::string body;
};

class DataStore {
public:
    explicit DataStore(size_t size_limit = kDefaultSizeLimit)
        : m_size_limit(size_limit)
    {
    }

    DataStore(const DataStore&) = delete;
    DataStore& operator=(const DataStore&) = delete;

    // Replaces the whole document (any JSON value, not only objects). Fails, leaving the store
    // unchanged, if the compact serialization is longer than the limit or nesting is too deep.
    Result<void> put(nlohmann::json value);
    Result<void> put_json(std::string_view text);

    // Merges `patch` into the document (RFC 7396). Fails before the first put(), and when the
    // result would exceed the limit (the store is then unchanged).
    Result<void> patch(const nlohmann::json& patch);
    Result<void> patch_json(std::string_view text);

    // The whole document, compact: "{}" while it was never set (or set to null), as
    // Firecracker's GET /mmds answers.
    std::string to_json() const;
    nlohmann::json value() const;
    bool initialized() const;

    // Forgets the document (a restored snapshot starts empty: Firecracker does not persist it).
    void clear();

    size_t size_limit() const;
    // Applies to later put()/patch() calls; the current document stays even if now larger.
    void set_size_limit(size_t limit);

    Version version() const;
    void set_version(Version version);
    // imds_compat: always answer in IMDS format, whatever the request's Accept header says.
    bool imds_compat() const;
    void set_imds_compat(bool on);

    // The guest's GET: `path` is the sanitized URI (runs of '/' collapsed). One trailing '/' is
    // ignored; the rest is a JSON pointer ("" and "/" are the whole document).
    Lookup get(std::string_view path, OutputFormat format) const;

private:
    Result<void> check_fits(const nlohmann::json& value) const;

    mutable std::mutex m_mutex;
    nlohmann::json m_data; // null until the first put()
    bool m_initialized { false };
    size_t m_size_limit;
    Version m_version { Version::V1 };
    bool m_imds_compat { false };
};

// Helpers shared with the HTTP handler and the tests.
// Resolves an RFC 6901 pointer as serde_json's Value::pointer does (no exceptions): nullptr when
// the path does not exist or does not start with '/' (except "", the root).
const nlohmann::json* resolve_pointer(const nlohmann::json& root, std::string_view pointer);
// IMDS text for a value; false (and nothing written) for numbers, booleans, arrays and null.
bool format_imds(const nlohmann::json& value, std::string& out);

} // namespace vessel::mmds

// One guest HTTP request to the MMDS, parsed as Firecracker's micro-http parses it.
//
// Parsed by hand rather than with libhttp-parser (which the API socket uses): the MMDS must give
// micro-http's answers for micro-http's corner cases — which methods are "unsupported" (501) and
// which "not allowed" (405), the exact error texts, headers split at the first ':' with unknown
// names kept in a case-preserving map, a Content-Length that must be a u32 but whose body is never
// read (the TCP endpoint hands over only the bytes up to the blank line). http-parser accepts and
// rejects different inputs (it reads bodies, knows 30+ methods, refuses bare-LF endings
// differently), so matching micro-http through it would take more code than this parser, which
// is a few string splits over at most 2500 bytes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace vessel::mmds {

enum class HttpMethod { Get, Put, Patch, Delete };
enum class HttpVersion { Http10, Http11 };
enum class MediaType { PlainText, ApplicationJson };

std::string_view to_string(HttpVersion version);
std::string_view to_string(MediaType type);

struct HttpRequest {
    HttpMethod method { HttpMethod::Get };
    HttpVersion version { HttpVersion::Http11 };
    std::string uri; // as sent (absolute-form URIs included)
    // "Accept: application/json" (exactly, after trimming) selects JSON; anything else or no
    // header leaves plain text, as micro-http ignores values it does not know.
    MediaType accept { MediaType::PlainText };
    uint32_t content_length { 0 };
    // Headers micro-http does not know (X-metadata-token, Host, ...): names and values trimmed,
    // case kept, in the order first seen; a repeated name (same spelling) keeps its last value
    // as micro-http's HashMap does.
    std::vector<std::pair<std::string, std::string>> custom_headers;

    // micro-http's Uri::get_abs_path: the path of "http://host/path" or of "/path"; "" for
    // anything else (which the MMDS answers with 400 "Invalid URI.").
    std::string_view abs_path() const;

    // The first custom header whose name equals one of `names` ignoring ASCII case. Firecracker
    // searches a HashMap, so with several matching headers its pick is arbitrary; ours is the
    // first in request order.
    const std::pair<std::string, std::string>* find_header(std::initializer_list<std::string_view> names) const;
};

// A request micro-http refuses: the status and plain-text body the MMDS answers with.
struct HttpParseError {
    int status;
    std::string body;
};

// Parses one request: `bytes` runs from the request line to the blank line ending the headers
// (see find_request_end in http_handler.h).
std::variant<HttpRequest, HttpParseError> parse_http_request(std::string_view bytes);

// Rust's str::parse::<u32>: an optional '+', then decimal digits, no overflow.
std::optional<uint32_t> parse_u32(std::string_view text);

// Trims ASCII whitespace at both ends (Rust's str::trim, for the ASCII range).
std::string_view trim(std::string_view text);

bool equals_ignore_case(std::string_view a, std::string_view b);

} // namespace vessel::mmds

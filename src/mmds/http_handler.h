// The guest side of the MMDS: one request's bytes in, the response bytes Firecracker's MMDS
// sends out (src/vmm/src/mmds/mod.rs on micro-http). Both versions serve GET and the token PUT;
// V2 GETs need a valid token. Responses look like
//
//   HTTP/1.1 200 \r\n                  (no reason phrase: micro-http writes none)
//   Server: Firecracker API\r\n
//   Connection: keep-alive\r\n
//   [Allow: GET, PUT\r\n]              (405 only)
//   Content-Type: text/plain\r\n
//   Content-Length: N\r\n
//   [X-metadata-token-ttl-seconds: T\r\n] (token responses: the TTL under the client's spelling)
//   \r\n
//   body
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "mmds/data_store.h"
#include "mmds/token_authority.h"

namespace vessel::mmds {

inline constexpr std::string_view kTokenPath = "/latest/api/token";

// Firecracker's request framing (dumbo/tcp/endpoint.rs): a request ends at the first "\n\n" or
// "\n\r\n". Returns the length up to and including it, or nothing while none is buffered.
std::optional<size_t> find_request_end(std::span<const uint8_t> bytes);

// Collapses runs of '/' (Firecracker's sanitize_uri), making the URI a strict JSON pointer.
std::string sanitize_uri(std::string_view uri);

// What a GET's session token was, for Firecracker's mmds.rx_no_token / rx_invalid_token counters
// (counted in both versions; V1 serves the GET anyway).
enum class TokenCheck { NotChecked, Valid, Missing, Invalid };

// Answers one request (`request` = bytes up to and including the blank line). Never fails: a
// malformed request gets the error response micro-http would give. `token_check`, if given, says
// what the request's token was (NotChecked for anything but a parsed GET).
std::string handle_request(
    std::string_view request, const DataStore& store, TokenAuthority& tokens, TokenCheck* token_check = nullptr);

} // namespace vessel::mmds

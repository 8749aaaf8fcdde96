// Fuzz target for what the API socket takes from a client: the HTTP/1.1 request parser (bytes in
// arbitrary chunks, pipelined requests, limits) and the JSON body readers (the serde-worded
// syntax check, typed field reads, rate limiters, MAC addresses, resource ids).
//
// Input: the first byte picks the part; for the HTTP part the second byte sets the chunk size.
// Invariants checked (a violation aborts, which libFuzzer records): a parser error always has a
// 400 status and a message; a complete request has a method; no request body exceeds the limit;
// parse_json() accepts exactly what nlohmann-json accepts (our syntax check must not let through
// what the real parser then rejects, nor reject valid JSON), NUL bytes and nesting limits aside.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "api/http.h"
#include "api/json_body.h"
#include "api/request/common.h"

using namespace vessel;
using namespace vessel::api;

namespace {

void require(bool condition)
{
    if (!condition)
        std::abort();
}

void fuzz_http(std::string_view data, size_t chunk)
{
    HttpLimits limits;
    limits.max_body_bytes = 512;
    limits.max_header_bytes = 1024;
    HttpRequestParser parser(limits);
    std::string pending;
    for (size_t i = 0; i < data.size(); i += chunk) {
        pending.append(data.substr(i, chunk));
        for (;;) {
            size_t consumed = 0;
            auto status = parser.feed(pending.data(), pending.size(), consumed);
            require(consumed <= pending.size());
            if (status == HttpRequestParser::Status::Error) {
                require(parser.error_status() == 400);
                require(!parser.error_message().empty());
                (void)serialize_response(HttpResponse::fault(parser.error_status(), parser.error_message()), false);
                return;
            }
            pending.erase(0, consumed);
            if (status != HttpRequestParser::Status::Complete)
                break;
            HttpRequest r = parser.take();
            require(!r.method.empty());
            require(r.body.size() <= limits.max_body_bytes);
            (void)parser.take_expect_continue();
            if (pending.empty())
                break;
        }
    }
}

void fuzz_json(std::string_view text)
{
    auto ours = parse_json(text);
    bool theirs = !nlohmann::json::parse(text.begin(), text.end(), nullptr, false).is_discarded();
    // Documents nested deeper than serde's limit are refused by us only, and nlohmann-json stops
    // at a NUL byte (taking what precedes it) where serde sees trailing characters.
    if (ours.ok())
        require(theirs);
    if (!ours.ok() && ours.error().message().find("recursion limit") == std::string::npos
        && ours.error().message().find("invalid unicode") == std::string::npos
        && text.find('\0') == std::string_view::npos)
        require(!theirs);
    if (!ours.ok())
        return;
    // Read the document as every kind of request body the API has.
    auto obj = JsonObject::read(ours.value(), "Fuzz",
        { "drive_id", "is_root_device", "vcpu_count", "mem_size_mib", "rate_limiter", "guest_mac", "state",
            "path_on_host" });
    if (!obj.ok()) {
        require(!obj.error().message().empty());
        return;
    }
    (void)obj->opt_string("drive_id");
    (void)obj->opt_bool("is_root_device");
    (void)obj->opt_unsigned("vcpu_count", "u8");
    (void)obj->opt_unsigned("mem_size_mib", "usize");
    (void)obj->opt_variant("state", { "Paused", "Resumed" });
    if (auto limiter = read_rate_limiter(*obj, "rate_limiter"); limiter.ok())
        (void)rate_limiter_json(limiter.value()).dump();
    if (auto mac = obj->opt_string("guest_mac"); mac.ok() && mac.value()) {
        if (auto parsed = read_mac(*mac.value()); parsed.ok())
            require(mac_string(parsed.value()).size() == 17);
    }
    if (auto id = obj->opt_string("drive_id"); id.ok() && id.value())
        (void)check_resource_id(*id.value());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size)
{
    if (size < 2)
        return 0;
    std::string_view rest(reinterpret_cast<const char*>(data + 2), size - 2);
    if (data[0] & 1)
        fuzz_http(rest, 1 + data[1] % 64);
    else
        fuzz_json(rest);
    return 0;
}

// The guest-side HTTP handler, byte for byte against the responses Firecracker's MMDS gives
// (src/vmm/src/mmds/mod.rs tests, micro-http's response writer, the integration tests'
// expectations quoted in the reference).
#include <gtest/gtest.h>

#include <string>

#include "mmds/http_handler.h"
#include "mmds/http_request.h"
#include "mmds_test_support.h"

using namespace vessel;
using namespace vessel::mmds;

namespace {

std::string response(std::string_view version, int status, std::string_view type, std::string_view body,
    std::string_view extra_before_type = {}, std::string_view extra_after_length = {})
{
    return std::string(version) + " " + std::to_string(status)
        + " \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n" + std::string(extra_before_type)
        + "Content-Type: " + std::string(type) + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n"
        + std::string(extra_after_length) + "\r\n" + std::string(body);
}

std::string text(int status, std::string_view body, std::string_view version = "HTTP/1.0")
{
    return response(version, status, "text/plain", body);
}

class MmdsHttp : public ::testing::Test {
protected:
    MmdsHttp()
    {
        EXPECT_TRUE(store
                        .put_json(R"({"name":{"first":"John","second":"Doe"},"age":43,)"
                                  R"("phones":{"home":{"RO":"+401234567","UK":"+441234567"},"mobile":"+442345678"}})")
                        .ok());
    }

    std::string handle(std::string_view request) { return handle_request(request, store, tokens); }

    std::string new_token(uint32_t ttl = 60)
    {
        const std::string reply = handle(
            "PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: " + std::to_string(ttl) + "\r\n\r\n");
        return reply.substr(reply.find("\r\n\r\n") + 4);
    }

    mmds_test::FakeClock clock;
    DataStore store;
    TokenAuthority tokens { clock.clock() };
};

TEST_F(MmdsHttp, GetImdsListing)
{
    EXPECT_EQ(handle("GET http://169.254.169.254/ HTTP/1.0\r\n\r\n"), text(200, "age\nname/\nphones/"));
    EXPECT_EQ(handle("GET / HTTP/1.1\r\n\r\n"), text(200, "age\nname/\nphones/", "HTTP/1.1"));
    EXPECT_EQ(handle("GET /name/first HTTP/1.1\r\n\r\n"), text(200, "John", "HTTP/1.1"));
    // Exact bytes once, spelled out.
    EXPECT_EQ(handle("GET /phones/home/UK HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 200 \r\nServer: Firecracker API\r\nConnection: keep-alive\r\nContent-Type: text/plain\r\n"
        "Content-Length: 10\r\n\r\n+441234567");
}

TEST_F(MmdsHttp, BusyboxWgetRequest)
{
    EXPECT_EQ(handle("GET /name/ HTTP/1.1\r\nHost: 169.254.169.254\r\nUser-Agent: Wget\r\nConnection: close\r\n\r\n"),
        text(200, "first\nsecond", "HTTP/1.1"));
}

TEST_F(MmdsHttp, AcceptHeaderSelectsFormat)
{
    const std::string json = R"({"age":43,"name":{"first":"John","second":"Doe"},)"
                             R"("phones":{"home":{"RO":"+401234567","UK":"+441234567"},"mobile":"+442345678"}})";
    EXPECT_EQ(handle("GET http://169.254.169.254/ HTTP/1.0\r\nAccept: application/json\r\n\r\n"),
        response("HTTP/1.0", 200, "application/json", json));
    EXPECT_EQ(handle("GET /name/first HTTP/1.0\r\nAccept:  application/json \r\n\r\n"),
        response("HTTP/1.0", 200, "application/json", "\"John\""));
    EXPECT_EQ(handle("GET /age HTTP/1.0\r\naccept: application/json\r\n\r\n"),
        response("HTTP/1.0", 200, "application/json", "43"));
    // Anything but exactly application/json stays plain (micro-http ignores unknown values).
    for (const char* accept :
        { "Accept:", "Accept: */*", "Accept: text/plain", "Accept: application/json, text/plain", "Accept: text/html" })
        EXPECT_EQ(handle(std::string("GET / HTTP/1.0\r\n") + accept + "\r\n\r\n"), text(200, "age\nname/\nphones/"))
            << accept;
}

TEST_F(MmdsHttp, ImdsCompatAnswersPlainText)
{
    store.set_imds_compat(true);
    EXPECT_EQ(handle("GET /name HTTP/1.0\r\nAccept: application/json\r\n\r\n"), text(200, "first\nsecond"));
}

TEST_F(MmdsHttp, NotFoundReportsTheRawPath)
{
    EXPECT_EQ(
        handle("GET http://169.254.169.254/invalid HTTP/1.0\r\n\r\n"), text(404, "Resource not found: /invalid."));
    EXPECT_EQ(handle("GET /latest?x=1 HTTP/1.0\r\n\r\n"), text(404, "Resource not found: /latest?x=1."));
    // '//' is collapsed for the look-up but reported as sent.
    EXPECT_EQ(handle("GET //name//first HTTP/1.0\r\n\r\n"), text(200, "John"));
    EXPECT_EQ(handle("GET //nope//x HTTP/1.0\r\n\r\n"), text(404, "Resource not found: //nope//x."));
    EXPECT_EQ(handle("GET /name/first%20 HTTP/1.0\r\n\r\n"), text(404, "Resource not found: /name/first%20."));
}

TEST_F(MmdsHttp, UnsupportedValueType)
{
    EXPECT_EQ(handle("GET /age HTTP/1.1\r\n\r\n"),
        text(501, "Cannot retrieve value. The value has an unsupported type.", "HTTP/1.1"));
}

TEST_F(MmdsHttp, EmptyStore)
{
    DataStore empty;
    EXPECT_EQ(handle_request("GET / HTTP/1.1\r\nAccept: application/json\r\n\r\n", empty, tokens),
        response("HTTP/1.1", 200, "application/json", "null"));
    EXPECT_EQ(handle_request("GET / HTTP/1.1\r\n\r\n", empty, tokens),
        text(501, "Cannot retrieve value. The value has an unsupported type.", "HTTP/1.1"));
    EXPECT_EQ(handle_request("GET /latest HTTP/1.1\r\n\r\n", empty, tokens),
        text(404, "Resource not found: /latest.", "HTTP/1.1"));
}

TEST_F(MmdsHttp, MethodNotAllowed)
{
    for (const char* method : { "PATCH", "DELETE" })
        EXPECT_EQ(handle(std::string(method) + " http://169.254.169.255/ HTTP/1.0\r\n\r\n"),
            response("HTTP/1.0", 405, "text/plain", "Not allowed HTTP method.", "Allow: GET, PUT\r\n"))
            << method;
}

TEST_F(MmdsHttp, ParserErrors)
{
    // Parser errors are answered HTTP/1.1 whatever the request said.
    const auto error = [](int status, std::string_view body) { return text(status, body, "HTTP/1.1"); };
    EXPECT_EQ(handle("POST / HTTP/1.0\r\n\r\n"), error(501, "Unsupported HTTP method."));
    EXPECT_EQ(handle("HEAD / HTTP/1.1\r\n\r\n"), error(501, "Unsupported HTTP method."));
    EXPECT_EQ(handle("get / HTTP/1.1\r\n\r\n"), error(501, "Unsupported HTTP method."));
    EXPECT_EQ(handle("GET / HTTP/2.0\r\n\r\n"), error(501, "Unsupported HTTP version."));
    EXPECT_EQ(handle("GET / http/1.1\r\n\r\n"), error(501, "Unsupported HTTP version."));
    EXPECT_EQ(handle("GET /a b HTTP/1.1\r\n\r\n"), error(501, "Unsupported HTTP version."));
    EXPECT_EQ(handle("GET   HTTP/1.0\r\n\r\n"), error(400, "Empty URI not allowed."));
    EXPECT_EQ(handle("GET  HTTP/1.0\r\n\r\n"), error(400, "Invalid request.")); // shorter than the minimum
    EXPECT_EQ(handle("GET /\xff HTTP/1.0\r\n\r\n"), error(400, "Cannot parse URI as UTF-8."));
    EXPECT_EQ(handle("GET / HTTP/1.1\n\n"), error(400, "Invalid request.")); // no CRLF at all
    EXPECT_EQ(handle("GET / HTTP/1\r\n\r\n"), error(400, "Invalid request.")); // line too short
    EXPECT_EQ(handle("GET/HTTP/1.1xx\r\n\r\n"), error(400, "Invalid request.")); // no separators
    EXPECT_EQ(handle("GET / HTTP/1.1\r\nHost: x\n\r\n"), error(400, "Invalid request.")); // no CRLF CRLF
    // A body is never read, so a positive Content-Length cannot be satisfied.
    EXPECT_EQ(handle("GET / HTTP/1.1\r\nContent-Length: 100\r\n\r\n"), error(400, "Invalid request."));
    EXPECT_EQ(handle("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), text(200, "age\nname/\nphones/", "HTTP/1.1"));
    EXPECT_EQ(handle("GET / HTTP/1.1\r\nHost: \xc3\x28\r\n\r\n"), error(400, "Invalid request."));
}

TEST_F(MmdsHttp, HeaderErrors)
{
    const auto error = [](std::string_view body) { return text(400, body, "HTTP/1.1"); };
    EXPECT_EQ(handle("GET / HTTP/1.1\r\nContent-Length: alpha\r\n\r\n"),
        error("Invalid value. Key:Content-Length; Value: alpha"));
    EXPECT_EQ(
        handle("GET / HTTP/1.1\r\ncontent-length: -1\r\n\r\n"), error("Invalid value. Key:content-length; Value: -1"));
    EXPECT_EQ(handle("GET / HTTP/1.1\r\nAccept-Encoding: *;q=0\r\n\r\n"),
        error("Invalid value. Key:Accept-Encoding; Value:*;q=0"));
    EXPECT_EQ(handle("GET / HTTP/1.1\r\nAccept-Encoding: gzip, identity;q=0\r\n\r\n"),
        error("Invalid value. Key:Accept-Encoding; Value: identity;q=0"));
    EXPECT_EQ(handle("GET / HTTP/1.1\r\nAccept-Encoding: identity, *;q=0\r\n\r\n"),
        text(200, "age\nname/\nphones/", "HTTP/1.1"));
    EXPECT_EQ(handle("GET / HTTP/1.1\r\nAccept-Encoding:\r\n\r\n"), error("Invalid request."));
    EXPECT_EQ(
        handle("GET / HTTP/1.1\r\nNoColonHere\r\n\r\n"), error("Header is incorrectly formatted. Key: NoColonHere"));
    // Unsupported values of known headers are ignored.
    EXPECT_EQ(handle("GET / HTTP/1.1\r\nContent-Type: text/html\r\nTransfer-Encoding: gzip\r\nExpect: x\r\n\r\n"),
        text(200, "age\nname/\nphones/", "HTTP/1.1"));
}

TEST_F(MmdsHttp, InvalidUri)
{
    EXPECT_EQ(handle("GET http:// HTTP/1.0\r\n\r\n"), text(400, "Invalid URI."));
    EXPECT_EQ(handle("GET http://169.254.169.254 HTTP/1.0\r\n\r\n"), text(400, "Invalid URI."));
    EXPECT_EQ(handle("GET name HTTP/1.0\r\n\r\n"), text(400, "Invalid URI."));
    EXPECT_EQ(handle("PUT https://x/latest/api/token HTTP/1.0\r\n\r\n"), text(400, "Invalid URI."));
}

TEST_F(MmdsHttp, TokenRequest)
{
    for (Version version : { Version::V1, Version::V2 }) {
        store.set_version(version);
        const std::string reply = handle(
            "PUT http://169.254.169.254/latest/api/token HTTP/1.0\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n");
        const std::string token = reply.substr(reply.find("\r\n\r\n") + 4);
        ASSERT_EQ(token.size(), 48u);
        EXPECT_EQ(reply, response("HTTP/1.0", 200, "text/plain", token, {}, "X-metadata-token-ttl-seconds: 60\r\n"));
        EXPECT_TRUE(tokens.is_valid(token));
    }
    // The echo keeps the client's spelling and the number's canonical form.
    std::string reply
        = handle("PUT //latest//api/token HTTP/1.1\r\nx-AWS-ec2-metadata-token-ttl-seconds: +0021600\r\n\r\n");
    std::string token = reply.substr(reply.find("\r\n\r\n") + 4);
    EXPECT_EQ(
        reply, response("HTTP/1.1", 200, "text/plain", token, {}, "x-AWS-ec2-metadata-token-ttl-seconds: 21600\r\n"));
    // The nc command of the guest test.
    reply = handle("PUT /latest/api/token HTTP/1.1\r\nX-metadata-token-ttl-seconds: 21600\r\n\r\n");
    EXPECT_EQ(reply.substr(0, 15), "HTTP/1.1 200 \r\n");
    EXPECT_TRUE(tokens.is_valid(reply.substr(reply.size() - 48)));
}

TEST_F(MmdsHttp, TokenRequestErrors)
{
    const std::string path = "PUT http://169.254.169.254/latest/api/token HTTP/1.0\r\n";
    // X-Forwarded-For is refused first, whatever the path, in any case, reported as spelled.
    EXPECT_EQ(handle("PUT http://169.254.169.254/ HTTP/1.0\r\nX-Forwarded-For: foo\r\n\r\n"),
        text(400, "Invalid header. Reason: Unsupported header name. Key: X-Forwarded-For"));
    EXPECT_EQ(handle(path + "x-forwarded-for: foo\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n"),
        text(400, "Invalid header. Reason: Unsupported header name. Key: x-forwarded-for"));
    EXPECT_EQ(handle("PUT http://169.254.169.254/latest/api/toke HTTP/1.0\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n"),
        text(404, "Resource not found: /latest/api/toke."));
    EXPECT_EQ(handle("PUT /latest/api/token/ HTTP/1.0\r\nX-metadata-token-ttl-seconds: 60\r\n\r\n"),
        text(404, "Resource not found: /latest/api/token/."));
    EXPECT_EQ(handle(path + "\r\n"),
        text(400,
            "Token time to live value not found. Use `X-metadata-token-ttl-seconds` or "
            "`X-aws-ec2-metadata-token-ttl-seconds` header to specify the token's lifetime."));
    EXPECT_EQ(handle(path + "X-metadata-token-ttl-seconds: application/json\r\n\r\n"),
        text(400, "Invalid header. Reason: Invalid value. Key:X-metadata-token-ttl-seconds; Value:application/json"));
    EXPECT_EQ(handle(path + "X-metadata-token-ttl-seconds: -5\r\n\r\n"),
        text(400, "Invalid header. Reason: Invalid value. Key:X-metadata-token-ttl-seconds; Value:-5"));
    for (uint32_t ttl : { 0u, 21601u })
        EXPECT_EQ(handle(path + "X-metadata-token-ttl-seconds: " + std::to_string(ttl) + "\r\n\r\n"),
            text(400,
                "Invalid time to live value provided for token: " + std::to_string(ttl)
                    + ". Please provide a value between 1 and 21600."));
    EXPECT_EQ(tokens.live_tokens(), 0u);
}

TEST_F(MmdsHttp, V2GetNeedsToken)
{
    store.set_version(Version::V2);
    const std::string no_token = "No MMDS token provided. Use `X-metadata-token` or `X-aws-ec2-metadata-token` "
                                 "header to specify the session token.";
    EXPECT_EQ(handle("GET /name/first HTTP/1.1\r\n\r\n"), text(401, no_token, "HTTP/1.1"));
    EXPECT_EQ(handle("GET /name/first HTTP/1.1\r\nX-metadata-token: foo\r\n\r\n"),
        text(401, "MMDS token not valid.", "HTTP/1.1"));
    const std::string token = new_token(1);
    EXPECT_EQ(
        handle("GET /name/first HTTP/1.1\r\nX-metadata-token: " + token + "\r\n\r\n"), text(200, "John", "HTTP/1.1"));
    EXPECT_EQ(handle("GET /name/first HTTP/1.1\r\nx-aws-ec2-metadata-token:  " + token + " \r\n\r\n"),
        text(200, "John", "HTTP/1.1"));
    // The TTL header means nothing on a GET, even when malformed.
    EXPECT_EQ(handle("GET /name/first HTTP/1.1\r\nX-metadata-token-ttl-seconds: x\r\nX-metadata-token: " + token
                  + "\r\n\r\n"),
        text(200, "John", "HTTP/1.1"));
    clock.now += 1000;
    EXPECT_EQ(handle("GET /name/first HTTP/1.1\r\nX-metadata-token: " + token + "\r\n\r\n"),
        text(401, "MMDS token not valid.", "HTTP/1.1"));
    // The token is checked before the path.
    EXPECT_EQ(handle("GET /missing HTTP/1.1\r\n\r\n"), text(401, no_token, "HTTP/1.1"));
}

TEST_F(MmdsHttp, V1GetIgnoresTokens)
{
    EXPECT_EQ(handle("GET /name/first HTTP/1.1\r\nX-metadata-token: bogus\r\n\r\n"), text(200, "John", "HTTP/1.1"));
}

TEST(MmdsHttpFraming, FindRequestEnd)
{
    auto end = [](std::string_view s) {
        return find_request_end({ reinterpret_cast<const uint8_t*>(s.data()), s.size() });
    };
    EXPECT_EQ(end("GET / HTTP/1.1\r\n\r\n"), 18u);
    EXPECT_EQ(end("GET / HTTP/1.1\r\n\r\nGET"), 18u);
    EXPECT_EQ(end("GET / HTTP/1.1\n\n"), 16u);
    EXPECT_EQ(end("GET / HTTP/1.1\r\nHost: x\r\n"), std::nullopt);
    EXPECT_EQ(end("GET / HTTP/1.1\r\n\r"), std::nullopt);
    EXPECT_EQ(end("\n\n"), std::nullopt); // Firecracker looks only past two bytes
    EXPECT_EQ(end("a\n\n"), 3u);
    EXPECT_EQ(end(""), std::nullopt);
}

TEST(MmdsHttpFraming, SanitizeUri)
{
    EXPECT_EQ(sanitize_uri("/a/b/c/d"), "/a/b/c/d");
    EXPECT_EQ(sanitize_uri("/a////b/c//d"), "/a/b/c/d");
    EXPECT_EQ(sanitize_uri("///////a//b///c//d"), "/a/b/c/d");
    EXPECT_EQ(sanitize_uri("a/"), "a/");
    EXPECT_EQ(sanitize_uri("aa//"), "aa/");
    EXPECT_EQ(sanitize_uri("////"), "/");
    EXPECT_EQ(sanitize_uri(""), "");
    EXPECT_EQ(sanitize_uri("//aa//bb///cc//d"), "/aa/bb/cc/d");
}

TEST(MmdsHttpFraming, RequestParsing)
{
    auto parsed = parse_http_request("GET http://h:80/p HTTP/1.0\r\nA: 1\r\n b : 2 \r\nA: 3\r\n\r\n");
    ASSERT_TRUE(std::holds_alternative<HttpRequest>(parsed));
    const auto& request = std::get<HttpRequest>(parsed);
    EXPECT_EQ(request.abs_path(), "/p");
    EXPECT_EQ(request.version, HttpVersion::Http10);
    ASSERT_EQ(request.custom_headers.size(), 2u);
    EXPECT_EQ(request.custom_headers[0], std::make_pair(std::string("A"), std::string("3")));
    EXPECT_EQ(request.custom_headers[1], std::make_pair(std::string("b"), std::string("2")));
    EXPECT_EQ(request.find_header({ "a" })->second, "3");
    EXPECT_EQ(request.find_header({ "c" }), nullptr);
    EXPECT_EQ(parse_u32("+7"), 7u);
    EXPECT_EQ(parse_u32("4294967295"), 4294967295u);
    EXPECT_EQ(parse_u32("4294967296"), std::nullopt);
    EXPECT_EQ(parse_u32("+"), std::nullopt);
    EXPECT_EQ(parse_u32(" 1"), std::nullopt);
}

} // namespace

// The API socket's HTTP layer: the request parser (partial, pipelined, limits, malformed input)
// and the response bytes (Firecracker's status line and header order).
#include <gtest/gtest.h>

#include <random>

#include "api/http.h"

using namespace vessel::api;

namespace {

struct Fed {
    std::vector<HttpRequest> requests;
    HttpRequestParser::Status last { HttpRequestParser::Status::NeedMore };
};

// Feeds `data` in chunks of `chunk` bytes, taking every complete request.
Fed feed_all(HttpRequestParser& p, const std::string& data, size_t chunk)
{
    Fed out;
    std::string pending;
    for (size_t i = 0; i < data.size(); i += chunk) {
        pending += data.substr(i, chunk);
        for (;;) {
            size_t consumed = 0;
            out.last = p.feed(pending.data(), pending.size(), consumed);
            if (out.last == HttpRequestParser::Status::Error)
                return out;
            pending.erase(0, consumed);
            if (out.last != HttpRequestParser::Status::Complete)
                break;
            out.requests.push_back(p.take());
            if (pending.empty())
                break;
        }
    }
    return out;
}

} // namespace

TEST(ApiHttp, ParsesARequestDeliveredOneByteAtATime)
{
    HttpRequestParser p { HttpLimits {} };
    std::string req = "PUT /machine-config HTTP/1.1\r\nHost: localhost\r\nContent-Length: 37\r\n\r\n"
                      "{\"vcpu_count\": 2, \"mem_size_mib\": 25}";
    auto fed = feed_all(p, req, 1);
    ASSERT_EQ(fed.requests.size(), 1u);
    const auto& r = fed.requests[0];
    EXPECT_EQ(r.method, "PUT");
    EXPECT_EQ(r.path, "/machine-config");
    EXPECT_EQ(r.body, "{\"vcpu_count\": 2, \"mem_size_mib\": 25}");
    ASSERT_NE(r.header("host"), nullptr);
    EXPECT_EQ(*r.header("host"), "localhost");
    EXPECT_TRUE(r.keep_alive);
}

TEST(ApiHttp, PipelinedRequestsComeOutInOrder)
{
    HttpRequestParser p { HttpLimits {} };
    std::string data;
    for (int i = 0; i < 50; ++i)
        data += "GET /" + std::to_string(i) + " HTTP/1.1\r\n\r\n";
    data += "PATCH /vm HTTP/1.1\r\nContent-Length: 19\r\n\r\n{\"state\": \"Paused\"}";
    for (size_t chunk : { size_t(1), size_t(7), size_t(4096) }) {
        HttpRequestParser parser { HttpLimits {} };
        auto fed = feed_all(parser, data, chunk);
        ASSERT_EQ(fed.requests.size(), 51u) << "chunk " << chunk;
        for (int i = 0; i < 50; ++i)
            EXPECT_EQ(fed.requests[i].path, "/" + std::to_string(i));
        EXPECT_EQ(fed.requests[50].method, "PATCH");
        EXPECT_EQ(fed.requests[50].body, "{\"state\": \"Paused\"}");
    }
}

TEST(ApiHttp, QueryAndHttp10KeepAlive)
{
    HttpRequestParser p { HttpLimits {} };
    auto fed = feed_all(p, "GET /console?history=100 HTTP/1.0\r\n\r\n", 4096);
    ASSERT_EQ(fed.requests.size(), 1u);
    EXPECT_EQ(fed.requests[0].path, "/console");
    EXPECT_EQ(fed.requests[0].query, "history=100");
    EXPECT_FALSE(fed.requests[0].keep_alive) << "HTTP/1.0 without keep-alive closes";
}

TEST(ApiHttp, BodyOverTheLimitIsRefusedFromItsContentLength)
{
    HttpLimits limits;
    limits.max_body_bytes = 50;
    HttpRequestParser p { limits };
    // The body itself never arrives: the refusal comes from the header alone.
    auto fed = feed_all(p, "PUT /mmds HTTP/1.1\r\nContent-Length: 50000\r\n\r\n", 4096);
    EXPECT_EQ(fed.last, HttpRequestParser::Status::Error);
    EXPECT_EQ(p.error_status(), 400);
    EXPECT_EQ(p.error_message(), "Request payload with size 50000 is larger than the limit of 50 allowed by server.");
}

TEST(ApiHttp, ChunkedBodyIsCountedAgainstTheLimit)
{
    HttpLimits limits;
    limits.max_body_bytes = 10;
    HttpRequestParser p { limits };
    auto fed = feed_all(
        p, "PUT /mmds HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n", 4096);
    EXPECT_EQ(fed.last, HttpRequestParser::Status::Error);
    EXPECT_NE(p.error_message().find("larger than the limit of 10"), std::string::npos);
}

TEST(ApiHttp, HeadersOverTheLimitAreRefused)
{
    HttpLimits limits;
    limits.max_header_bytes = 1024;
    HttpRequestParser p { limits };
    std::string req = "GET / HTTP/1.1\r\nX-Long: " + std::string(2000, 'a') + "\r\n\r\n";
    auto fed = feed_all(p, req, 100);
    EXPECT_EQ(fed.last, HttpRequestParser::Status::Error);
    EXPECT_EQ(p.error_status(), 400);
}

TEST(ApiHttp, MalformedRequestLinesAreErrorsNotCrashes)
{
    for (std::string bad : { std::string("\x01\x02garbage\r\n\r\n"), std::string("GET / HTTP/9.9\r\n\r\n"),
             std::string("GET / FTP/1.1\r\n\r\n"), std::string("PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
             std::string("GET / HTTP/1.1\r\nno colon here\r\n\r\n") }) {
        HttpRequestParser p { HttpLimits {} };
        auto fed = feed_all(p, bad, 3);
        EXPECT_EQ(fed.last, HttpRequestParser::Status::Error) << bad;
        EXPECT_EQ(p.error_status(), 400) << bad;
        EXPECT_FALSE(p.error_message().empty());
    }
}

TEST(ApiHttp, ExpectContinueIsReportedOnce)
{
    HttpRequestParser p { HttpLimits {} };
    size_t consumed = 0;
    std::string head = "PUT /mmds HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
    EXPECT_EQ(p.feed(head.data(), head.size(), consumed), HttpRequestParser::Status::NeedMore);
    EXPECT_TRUE(p.take_expect_continue());
    EXPECT_FALSE(p.take_expect_continue());
    EXPECT_EQ(p.feed("{}", 2, consumed), HttpRequestParser::Status::Complete);
    EXPECT_EQ(p.take().body, "{}");
}

TEST(ApiHttp, UpgradeRequestsAreMarked)
{
    HttpRequestParser p { HttpLimits {} };
    auto fed
        = feed_all(p, "GET /console HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: vessel-console\r\n\r\nraw bytes", 4096);
    ASSERT_GE(fed.requests.size(), 1u);
    EXPECT_TRUE(fed.requests[0].upgrade);
}

TEST(ApiHttp, RandomBytesNeverCrashTheParser)
{
    std::mt19937 rng(1234);
    for (int round = 0; round < 2000; ++round) {
        std::string data(rng() % 300, '\0');
        for (auto& c : data)
            c = static_cast<char>(rng());
        if (round % 2)
            data = "PUT /x HTTP/1.1\r\nContent-Length: 5\r\n" + data;
        HttpRequestParser p { HttpLimits {} };
        auto fed = feed_all(p, data, 1 + rng() % 17);
        // Whatever came out is well-formed: an error says why, a request has a method.
        if (fed.last == HttpRequestParser::Status::Error) {
            EXPECT_EQ(p.error_status(), 400);
            EXPECT_FALSE(p.error_message().empty());
        }
        for (auto& r : fed.requests)
            EXPECT_FALSE(r.method.empty());
    }
}

TEST(ApiHttp, ResponsesHaveFirecrackersShape)
{
    EXPECT_EQ(serialize_response(HttpResponse::no_content(), true),
        "HTTP/1.1 204 \r\nServer: Vessel API\r\nConnection: keep-alive\r\n\r\n");
    EXPECT_EQ(serialize_response(HttpResponse::fault(400, "Empty PUT request."), true),
        "HTTP/1.1 400 \r\nServer: Vessel API\r\nConnection: keep-alive\r\nContent-Type: application/json\r\n"
        "Content-Length: 38\r\n\r\n{\"fault_message\":\"Empty PUT request.\"}");
    auto fault = HttpResponse::fault(400, "quote \" and \x01 control");
    EXPECT_EQ(fault.body, "{\"fault_message\":\"quote \\\" and \\u0001 control\"}");
    EXPECT_NE(
        serialize_response(HttpResponse::json(200, "{}"), false).find("Connection: close\r\n"), std::string::npos);
}

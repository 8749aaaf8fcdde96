// HTTP/1.1 messages for the API socket: a request as the parser delivers it, a response as the
// server writes it, and an incremental request parser over Debian's libhttp-parser (node's
// http-parser 2.9: a streaming C parser that copes with partial and pipelined requests, chunked
// bodies and upgrades; we add the limits an API socket needs).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct http_parser;

namespace vessel::api {

struct HttpRequest {
    std::string method; // "GET", "PUT", ...
    std::string path; // the URL's path, percent-decoding not applied
    std::string query; // after '?', or empty
    std::vector<std::pair<std::string, std::string>> headers; // names lower-cased
    std::string body;
    bool keep_alive { true };
    bool upgrade { false }; // "Connection: Upgrade" with an "Upgrade:" header

    // The value of header `name` (lower-case), if present.
    const std::string* header(std::string_view name) const;
};

struct HttpResponse {
    int status { 204 };
    std::string body;
    std::string content_type { "application/json" };
    std::vector<std::pair<std::string, std::string>> headers; // extra headers
    bool close { false }; // close the connection after this response

    // After the response is written, the connection's socket is handed to this function (and
    // the server forgets it): for upgrades such as the console. The string holds bytes the
    // client sent after its request.
    std::function<void(int fd, std::string early_bytes)> take_over;

    static HttpResponse no_content() { return HttpResponse {}; }
    static HttpResponse json(int status, std::string body);
    // Firecracker's error shape: {"fault_message": "..."}.
    static HttpResponse fault(int status, std::string_view message);
};

// The reason phrase for a status code ("OK", "No Content", ...).
std::string_view reason_phrase(int status);

// Serialises `response` as an HTTP/1.1 message (status line, headers, body).
std::string serialize_response(const HttpResponse& response, bool keep_alive);

struct HttpLimits {
    size_t max_header_bytes { 16 * 1024 }; // request line and headers
    size_t max_body_bytes { 51200 }; // Firecracker's default payload limit
    size_t max_headers { 64 };
};

// Incremental parser for the requests on one connection. feed() consumes bytes until a request
// is complete (then take() returns it; call feed() again with the rest) or all bytes are used.
class HttpRequestParser {
public:
    enum class Status {
        NeedMore, // all bytes consumed, request not complete
        Complete, // a request is ready: take() it; `consumed` bytes were used
        Error, // malformed or over a limit: answer error_status() and close
    };

    explicit HttpRequestParser(HttpLimits limits);
    ~HttpRequestParser();
    HttpRequestParser(const HttpRequestParser&) = delete;
    HttpRequestParser& operator=(const HttpRequestParser&) = delete;

    Status feed(const char* data, size_t len, size_t& consumed);
    HttpRequest take();

    // After Error: the status code to answer (400, 413, 431, 505 ...) and why.
    int error_status() const { return m_error_status; }
    const std::string& error_message() const { return m_error_message; }
    // True while a request has started arriving but is not complete.
    bool in_request() const { return m_in_message; }
    // The headers of the request being received asked for "100 Continue" (Expect: 100-continue
    // with a body to come); true once, after which the flag clears.
    bool take_expect_continue()
    {
        bool v = m_expect_continue;
        m_expect_continue = false;
        return v;
    }

private:
    friend struct ParserCallbacks;
    int fail(int status, std::string message);
    int payload_too_large(uint64_t size);

    HttpLimits m_limits;
    std::unique_ptr<http_parser> m_parser;
    HttpRequest m_current;
    std::string m_url;
    std::string m_field;
    std::string m_value;
    bool m_in_value { false };
    size_t m_header_bytes { 0 };
    bool m_in_message { false };
    bool m_complete { false };
    bool m_expect_continue { false };
    int m_error_status { 0 };
    std::string m_error_message;
};

} // namespace vessel::api

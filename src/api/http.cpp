#include "api/http.h"

#include <http_parser.h>

#include <algorithm>
#include <cctype>
#include <climits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace vessel::api {

const std::string* HttpRequest::header(std::string_view name) const
{
    for (auto& [key, value] : headers)
        if (key == name)
            return &value;
    return nullptr;
}

HttpResponse HttpResponse::json(int status, std::string body)
{
    HttpResponse r;
    r.status = status;
    r.body = std::move(body);
    return r;
}

HttpResponse HttpResponse::fault(int status, std::string_view message)
{
    nlohmann::json doc = { { "fault_message", std::string(message) } };
    // Invalid UTF-8 in a message (echoed user input) is replaced, never an exception.
    return json(status, doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

std::string_view reason_phrase(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

std::string serialize_response(const HttpResponse& response, bool keep_alive)
{
    // Firecracker's status line has no reason phrase (and keeps the space before it).
    std::string out = fmt::format("HTTP/1.1 {} \r\nServer: Vessel API\r\n", response.status);
    if (response.status == 101) {
        for (auto& [name, value] : response.headers)
            out += fmt::format("{}: {}\r\n", name, value);
        out += "\r\n";
        return out;
    }
    out += keep_alive && !response.close ? "Connection: keep-alive\r\n" : "Connection: close\r\n";
    for (auto& [name, value] : response.headers)
        out += fmt::format("{}: {}\r\n", name, value);
    // 204 carries no body and (RFC 9110 8.6) no Content-Length; everything else both headers,
    // in Firecracker's order.
    if (response.status != 204) {
        out += fmt::format("Content-Type: {}\r\n", response.content_type);
        out += fmt::format("Content-Length: {}\r\n", response.body.size());
    }
    out += "\r\n";
    if (response.status != 204)
        out += response.body;
    return out;
}

// --- the parser ------------------------------------------------------------------------------

struct ParserCallbacks {
    static HttpRequestParser& self(http_parser* p) { return *static_cast<HttpRequestParser*>(p->data); }

    static int count(HttpRequestParser& s, size_t len)
    {
        s.m_header_bytes += len;
        if (s.m_header_bytes > s.m_limits.max_header_bytes)
            return s.fail(400,
                fmt::format("Invalid request: the request line and headers are longer than {} bytes.",
                    s.m_limits.max_header_bytes));
        return 0;
    }

    static void commit_header(HttpRequestParser& s)
    {
        if (!s.m_in_value && s.m_field.empty())
            return;
        std::string name = s.m_field;
        std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
        s.m_current.headers.emplace_back(std::move(name), s.m_value);
        s.m_field.clear();
        s.m_value.clear();
        s.m_in_value = false;
    }

    static int on_message_begin(http_parser* p)
    {
        auto& s = self(p);
        s.m_current = {};
        s.m_url.clear();
        s.m_field.clear();
        s.m_value.clear();
        s.m_in_value = false;
        s.m_header_bytes = 0;
        s.m_in_message = true;
        return 0;
    }

    static int on_url(http_parser* p, const char* at, size_t len)
    {
        auto& s = self(p);
        if (int r = count(s, len))
            return r;
        s.m_url.append(at, len);
        return 0;
    }

    static int on_header_field(http_parser* p, const char* at, size_t len)
    {
        auto& s = self(p);
        if (int r = count(s, len))
            return r;
        if (s.m_in_value) {
            commit_header(s);
            if (s.m_current.headers.size() > s.m_limits.max_headers)
                return s.fail(400, fmt::format("Invalid request: more than {} headers.", s.m_limits.max_headers));
        }
        s.m_field.append(at, len);
        return 0;
    }

    static int on_header_value(http_parser* p, const char* at, size_t len)
    {
        auto& s = self(p);
        if (int r = count(s, len))
            return r;
        s.m_value.append(at, len);
        s.m_in_value = true;
        return 0;
    }

    static int on_headers_complete(http_parser* p)
    {
        auto& s = self(p);
        commit_header(s);
        if (s.m_current.headers.size() > s.m_limits.max_headers)
            return s.fail(400, fmt::format("Invalid request: more than {} headers.", s.m_limits.max_headers));
        if (p->http_major != 1)
            return s.fail(400, "Invalid HTTP Version: Unsupported HTTP version.");
        s.m_current.method = http_method_str(static_cast<http_method>(p->method));
        size_t q = s.m_url.find('?');
        s.m_current.path = s.m_url.substr(0, q);
        if (q != std::string::npos)
            s.m_current.query = s.m_url.substr(q + 1);
        // Content-Length is known here; a chunked body is counted as it arrives (on_body).
        if (p->content_length != ULLONG_MAX && p->content_length > s.m_limits.max_body_bytes)
            return s.payload_too_large(p->content_length);
        if (const auto* expect = s.m_current.header("expect");
            expect && p->content_length != ULLONG_MAX && p->content_length > 0) {
            std::string v = *expect;
            std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
            s.m_expect_continue = v == "100-continue";
        }
        return 0;
    }

    static int on_body(http_parser* p, const char* at, size_t len)
    {
        auto& s = self(p);
        if (s.m_current.body.size() + len > s.m_limits.max_body_bytes)
            return s.payload_too_large(s.m_current.body.size() + len);
        s.m_current.body.append(at, len);
        return 0;
    }

    static int on_message_complete(http_parser* p)
    {
        auto& s = self(p);
        s.m_current.keep_alive = http_should_keep_alive(p) != 0;
        s.m_current.upgrade = p->upgrade != 0;
        s.m_complete = true;
        s.m_in_message = false;
        // One request at a time: the server answers it before the parser looks at the next.
        http_parser_pause(p, 1);
        return 0;
    }

    static const http_parser_settings& settings()
    {
        static const http_parser_settings settings = [] {
            http_parser_settings st {};
            st.on_message_begin = on_message_begin;
            st.on_url = on_url;
            st.on_header_field = on_header_field;
            st.on_header_value = on_header_value;
            st.on_headers_complete = on_headers_complete;
            st.on_body = on_body;
            st.on_message_complete = on_message_complete;
            return st;
        }();
        return settings;
    }
};

HttpRequestParser::HttpRequestParser(HttpLimits limits)
    : m_limits(limits)
    , m_parser(std::make_unique<http_parser>())
{
    http_parser_init(m_parser.get(), HTTP_REQUEST);
    m_parser->data = this;
}

HttpRequestParser::~HttpRequestParser() = default;

int HttpRequestParser::fail(int status, std::string message)
{
    m_error_status = status;
    m_error_message = std::move(message);
    return -1;
}

int HttpRequestParser::payload_too_large(uint64_t size)
{
    return fail(400,
        fmt::format("Request payload with size {} is larger than the limit of {} allowed by server.", size,
            m_limits.max_body_bytes));
}

HttpRequestParser::Status HttpRequestParser::feed(const char* data, size_t len, size_t& consumed)
{
    consumed = 0;
    if (m_error_status)
        return Status::Error;
    if (m_complete)
        return Status::Complete;
    if (len == 0)
        return Status::NeedMore;
    size_t n = http_parser_execute(m_parser.get(), &ParserCallbacks::settings(), data, len);
    auto err = HTTP_PARSER_ERRNO(m_parser.get());
    if (err == HPE_PAUSED) {
        http_parser_pause(m_parser.get(), 0);
        consumed = n;
        return Status::Complete;
    }
    if (err != HPE_OK) {
        if (!m_error_status)
            fail(400, fmt::format("Invalid request: {}.", http_errno_description(err)));
        return Status::Error;
    }
    consumed = n;
    if (m_complete)
        return Status::Complete;
    return Status::NeedMore;
}

HttpRequest HttpRequestParser::take()
{
    m_complete = false;
    return std::move(m_current);
}

} // namespace vessel::api

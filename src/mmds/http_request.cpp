#include "mmds/http_request.h"

#include <fmt/format.h>

namespace vessel::mmds {

namespace {

constexpr std::string_view kCrlf = "\r\n";

HttpParseError invalid_request()
{
    return { 400, "Invalid request." };
}

char ascii_lower(char c)
{
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lower(std::string_view text)
{
    std::string out(text);
    for (char& c : out)
        c = ascii_lower(c);
    return out;
}

// Rust's str::from_utf8: well-formed UTF-8 only (no overlong forms, surrogates or values past
// U+10FFFF).
bool valid_utf8(std::string_view text)
{
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const auto* end = p + text.size();
    while (p < end) {
        const unsigned char c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (static_cast<size_t>(end - p) <= n)
            return false;
        if (p[1] < lo || p[1] > hi)
            return false;
        for (size_t i = 2; i <= n; ++i) {
            if (p[i] < 0x80 || p[i] > 0xbf)
                return false;
        }
        p += n + 1;
    }
    return true;
}

// HttpHeaderError texts (micro-http common/mod.rs); the MMDS sends them without the
// "Invalid header. Reason: " prefix of RequestError.
HttpParseError invalid_value(std::string_view key, std::string_view value)
{
    return { 400, fmt::format("Invalid value. Key:{}; Value:{}", key, value) };
}

// Accept-Encoding: refuses only encodings that rule out identity ("identity;q=0", or "*;q=0"
// without identity listed). `value` is trimmed; each listed encoding is reported untrimmed.
std::optional<HttpParseError> check_accept_encoding(std::string_view value)
{
    if (value.empty())
        return invalid_request();
    size_t start = 0;
    while (true) {
        const size_t comma = value.find(',', start);
        const std::string_view encoding
            = value.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
        const std::string_view trimmed = trim(encoding);
        if (trimmed == "identity;q=0" || (trimmed == "*;q=0" && value.find("identity") == std::string_view::npos))
            return invalid_value("Accept-Encoding", encoding);
        if (comma == std::string_view::npos)
            return std::nullopt;
        start = comma + 1;
    }
}

void insert_custom(HttpRequest& request, std::string_view name, std::string_view value)
{
    for (auto& entry : request.custom_headers) {
        if (entry.first == name) {
            entry.second = value;
            return;
        }
    }
    request.custom_headers.emplace_back(name, value);
}

// One header line (micro-http RequestHeaders::parse_header_line). Values a known header does
// not support are skipped, as micro-http skips UnsupportedValue.
std::optional<HttpParseError> parse_header_line(HttpRequest& request, std::string_view line)
{
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos)
        return HttpParseError { 400, fmt::format("Header is incorrectly formatted. Key: {}", line) };
    const std::string_view key = line.substr(0, colon);
    const std::string_view value = line.substr(colon + 1);
    const std::string name = lower(trim(key));
    if (name == "content-length") {
        auto length = parse_u32(trim(value));
        if (!length)
            return invalid_value(key, value);
        request.content_length = *length;
    } else if (name == "accept") {
        const std::string_view type = trim(value);
        if (type == "text/plain")
            request.accept = MediaType::PlainText;
        else if (type == "application/json")
            request.accept = MediaType::ApplicationJson;
    } else if (name == "accept-encoding") {
        return check_accept_encoding(trim(value));
    } else if (name == "content-type" || name == "transfer-encoding" || name == "expect" || name == "server"
        || name == "deprecation" || name == "allow") {
        // Known to micro-http and irrelevant here: the MMDS never reads a body.
    } else {
        insert_custom(request, trim(key), trim(value));
    }
    return std::nullopt;
}

} // namespace

std::string_view to_string(HttpVersion version)
{
    return version == HttpVersion::Http10 ? "HTTP/1.0" : "HTTP/1.1";
}

std::string_view to_string(MediaType type)
{
    return type == MediaType::ApplicationJson ? "application/json" : "text/plain";
}

std::string_view trim(std::string_view text)
{
    constexpr std::string_view kSpace = " \t\n\v\f\r";
    const size_t first = text.find_first_not_of(kSpace);
    if (first == std::string_view::npos)
        return {};
    const size_t last = text.find_last_not_of(kSpace);
    return text.substr(first, last - first + 1);
}

bool equals_ignore_case(std::string_view a, std::string_view b)
{
    if (a.size() != b.size())
        return false;
    for (size_t i = 0; i < a.size(); ++i) {
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    }
    return true;
}

std::optional<uint32_t> parse_u32(std::string_view text)
{
    if (!text.empty() && text.front() == '+')
        text.remove_prefix(1);
    if (text.empty())
        return std::nullopt;
    uint64_t value = 0;
    for (char c : text) {
        if (c < '0' || c > '9')
            return std::nullopt;
        value = value * 10 + static_cast<uint64_t>(c - '0');
        if (value > UINT32_MAX)
            return std::nullopt;
    }
    return static_cast<uint32_t>(value);
}

std::string_view HttpRequest::abs_path() const
{
    constexpr std::string_view kScheme = "http://";
    const std::string_view text = uri;
    if (text.starts_with(kScheme)) {
        const std::string_view rest = text.substr(kScheme.size());
        const size_t slash = rest.find('/');
        return slash == std::string_view::npos ? std::string_view {} : rest.substr(slash);
    }
    return text.starts_with('/') ? text : std::string_view {};
}

const std::pair<std::string, std::string>* HttpRequest::find_header(std::initializer_list<std::string_view> names) const
{
    for (const auto& entry : custom_headers) {
        for (std::string_view name : names) {
            if (equals_ignore_case(entry.first, name))
                return &entry;
        }
    }
    return nullptr;
}

std::variant<HttpRequest, HttpParseError> parse_http_request(std::string_view bytes)
{
    const size_t line_end = bytes.find(kCrlf);
    if (line_end == std::string_view::npos)
        return invalid_request();
    const std::string_view line = bytes.substr(0, line_end);
    // The shortest request line micro-http accepts: "GET" SP 1-byte URI SP "HTTP/1.0".
    if (line.size() < std::string_view("GET").size() + 1 + std::string_view("HTTP/1.0").size() + 2)
        return invalid_request();

    const size_t method_end = line.find(' ');
    if (method_end == std::string_view::npos)
        return invalid_request();
    const size_t uri_end = line.find(' ', method_end + 1);
    if (uri_end == std::string_view::npos)
        return invalid_request();
    const std::string_view method = line.substr(0, method_end);
    const std::string_view uri = line.substr(method_end + 1, uri_end - method_end - 1);
    const std::string_view version = line.substr(uri_end + 1);

    HttpRequest request;
    // Checked in micro-http's order: method, URI, version.
    if (method == "GET")
        request.method = HttpMethod::Get;
    else if (method == "PUT")
        request.method = HttpMethod::Put;
    else if (method == "PATCH")
        request.method = HttpMethod::Patch;
    else if (method == "DELETE")
        request.method = HttpMethod::Delete;
    else
        return HttpParseError { 501, "Unsupported HTTP method." };
    if (uri.empty())
        return HttpParseError { 400, "Empty URI not allowed." };
    if (!valid_utf8(uri))
        return HttpParseError { 400, "Cannot parse URI as UTF-8." };
    request.uri = uri;
    if (version == "HTTP/1.0")
        request.version = HttpVersion::Http10;
    else if (version == "HTTP/1.1")
        request.version = HttpVersion::Http11;
    else
        return HttpParseError { 501, "Unsupported HTTP version." };

    // The headers end at the first CRLF CRLF counted from the request line's own CRLF.
    const std::string_view rest = bytes.substr(line_end);
    const size_t headers_end = rest.find("\r\n\r\n");
    if (headers_end == std::string_view::npos)
        return invalid_request();
    if (headers_end == 0)
        return request;

    const std::string_view headers = rest.substr(kCrlf.size(), headers_end - kCrlf.size());
    if (!valid_utf8(headers))
        return invalid_request();
    size_t start = 0;
    while (start <= headers.size()) {
        const size_t end = headers.find(kCrlf, start);
        const std::string_view header_line
            = headers.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
        if (header_line.empty())
            break;
        if (auto error = parse_header_line(request, header_line))
            return *error;
        if (end == std::string_view::npos)
            break;
        start = end + kCrlf.size();
    }

    // micro-http reads a body of exactly Content-Length bytes after the blank line. The MMDS
    // never hands it one, so any positive Content-Length ends here as 400 "Invalid request."
    // (Firecracker's test_guest_mmds_hang): the guest learns at once instead of waiting.
    if (request.content_length > 0) {
        const size_t body_start = headers_end + 4;
        if (rest.size() - body_start != request.content_length)
            return invalid_request();
    }
    return request;
}

} // namespace vessel::mmds

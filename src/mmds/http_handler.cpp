#include "mmds/http_handler.h"

#include <fmt/format.h>

#include "mmds/http_request.h"

namespace vessel::mmds {

namespace {

constexpr std::string_view kInvalidUri = "Invalid URI.";
constexpr std::string_view kMethodNotAllowed = "Not allowed HTTP method.";
constexpr std::string_view kInvalidToken = "MMDS token not valid.";
constexpr std::string_view kNoTokenProvided = "No MMDS token provided. Use `X-metadata-token` or "
                                              "`X-aws-ec2-metadata-token` header to specify the session token.";
constexpr std::string_view kNoTtlProvided
    = "Token time to live value not found. Use `X-metadata-token-ttl-seconds` or "
      "`X-aws-ec2-metadata-token-ttl-seconds` header to specify the token's lifetime.";

constexpr std::string_view kTokenHeader = "x-metadata-token";
constexpr std::string_view kAwsTokenHeader = "x-aws-ec2-metadata-token";
constexpr std::string_view kTtlHeader = "x-metadata-token-ttl-seconds";
constexpr std::string_view kAwsTtlHeader = "x-aws-ec2-metadata-token-ttl-seconds";
constexpr std::string_view kForwardedForHeader = "x-forwarded-for";

struct Response {
    HttpVersion version { HttpVersion::Http11 };
    int status { 200 };
    MediaType content_type { MediaType::PlainText };
    std::string body;
    bool allow_get_put { false };
    const std::pair<std::string, std::string>* echo_header { nullptr }; // name as the client sent it
    std::string echo_value;
};

// micro-http's Response::write_all: status line without a reason phrase, then its fixed headers.
std::string serialize(const Response& response)
{
    std::string out = fmt::format("{} {} \r\nServer: Firecracker API\r\nConnection: keep-alive\r\n",
        to_string(response.version), response.status);
    if (response.allow_get_put)
        out += "Allow: GET, PUT\r\n";
    out += fmt::format(
        "Content-Type: {}\r\nContent-Length: {}\r\n", to_string(response.content_type), response.body.size());
    if (response.echo_header)
        out += fmt::format("{}: {}\r\n", response.echo_header->first, response.echo_value);
    out += "\r\n";
    out += response.body;
    return out;
}

Response make_response(HttpVersion version, int status, MediaType type, std::string body)
{
    Response response;
    response.version = version;
    response.status = status;
    response.content_type = type;
    response.body = std::move(body);
    return response;
}

Response plain(const HttpRequest& request, int status, std::string body)
{
    return make_response(request.version, status, MediaType::PlainText, std::move(body));
}

Response serve_get(const HttpRequest& request, const DataStore& store)
{
    const std::string_view uri = request.abs_path();
    const OutputFormat format = request.accept == MediaType::ApplicationJson ? OutputFormat::Json : OutputFormat::Imds;
    Lookup lookup = store.get(sanitize_uri(uri), format);
    switch (lookup.status) {
    case Lookup::Status::Ok: {
        // With imds_compat the body is IMDS text whatever the Accept header asked for; we label
        // it text/plain as the API documentation says, where Firecracker's code still echoes
        // the Accept type (a mislabelled body helps no client).
        const MediaType type = store.imds_compat() ? MediaType::PlainText : request.accept;
        return make_response(request.version, 200, type, std::move(lookup.body));
    }
    case Lookup::Status::NotFound:
        // The URI as sent, before '//' runs were collapsed (Firecracker reports the raw path).
        return plain(request, 404, fmt::format("Resource not found: {}.", uri));
    case Lookup::Status::UnsupportedType: break;
    }
    return plain(request, 501, std::string(kUnsupportedValueMessage));
}

TokenCheck check_token(const HttpRequest& request, const TokenAuthority& tokens)
{
    const auto* token = request.find_header({ kTokenHeader, kAwsTokenHeader });
    if (!token)
        return TokenCheck::Missing;
    return tokens.is_valid(token->second) ? TokenCheck::Valid : TokenCheck::Invalid;
}

Response get_v2(const HttpRequest& request, const DataStore& store, TokenCheck check)
{
    if (check == TokenCheck::Missing)
        return plain(request, 401, std::string(kNoTokenProvided));
    if (check == TokenCheck::Invalid)
        return plain(request, 401, std::string(kInvalidToken));
    return serve_get(request, store);
}

// PUT /latest/api/token, the same in V1 and V2 (V1 offers tokens to ease migrating to V2).
Response put_token(const HttpRequest& request, TokenAuthority& tokens)
{
    // Before the path check: a token request relayed by a proxy is refused whatever its path.
    if (const auto* forwarded = request.find_header({ kForwardedForHeader }))
        return plain(
            request, 400, fmt::format("Invalid header. Reason: Unsupported header name. Key: {}", forwarded->first));

    const std::string_view uri = request.abs_path();
    if (sanitize_uri(uri) != kTokenPath)
        return plain(request, 404, fmt::format("Resource not found: {}.", uri));

    const auto* ttl_header = request.find_header({ kTtlHeader, kAwsTtlHeader });
    if (!ttl_header)
        return plain(request, 400, std::string(kNoTtlProvided));
    const auto ttl = parse_u32(ttl_header->second);
    if (!ttl)
        return plain(request, 400,
            fmt::format(
                "Invalid header. Reason: Invalid value. Key:{}; Value:{}", ttl_header->first, ttl_header->second));

    auto token = tokens.generate(*ttl);
    if (!token)
        return plain(request, 400, token.error().message());
    Response response = plain(request, 200, token.release_value());
    // Echoed under the client's own spelling: the AWS SDK for Go reads the TTL back this way.
    response.echo_header = ttl_header;
    response.echo_value = std::to_string(*ttl);
    return response;
}

} // namespace

std::optional<size_t> find_request_end(std::span<const uint8_t> bytes)
{
    // Firecracker only looks once more than two bytes are buffered.
    if (bytes.size() <= 2)
        return std::nullopt;
    for (size_t i = 0; i + 1 < bytes.size(); ++i) {
        if (bytes[i] != '\n')
            continue;
        if (bytes[i + 1] == '\n')
            return i + 2;
        if (i + 3 <= bytes.size() && bytes[i + 1] == '\r' && bytes[i + 2] == '\n')
            return i + 3;
    }
    return std::nullopt;
}

std::string sanitize_uri(std::string_view uri)
{
    std::string out;
    out.reserve(uri.size());
    for (char c : uri) {
        if (c == '/' && !out.empty() && out.back() == '/')
            continue;
        out += c;
    }
    return out;
}

std::string handle_request(
    std::string_view bytes, const DataStore& store, TokenAuthority& tokens, TokenCheck* token_check)
{
    if (token_check)
        *token_check = TokenCheck::NotChecked;
    auto parsed = parse_http_request(bytes);
    if (auto* error = std::get_if<HttpParseError>(&parsed)) {
        // As Firecracker: HTTP/1.1 whatever the request said (it may not have been parsed).
        // Firecracker labels these plain-text bodies application/json (micro-http's default
        // type, left over in dumbo's endpoint after PR #5226 fixed every other MMDS response);
        // we send text/plain, which is what the body is.
        return serialize(make_response(HttpVersion::Http11, error->status, MediaType::PlainText, error->body));
    }
    const HttpRequest& request = std::get<HttpRequest>(parsed);
    if (request.abs_path().empty())
        return serialize(plain(request, 400, std::string(kInvalidUri)));

    switch (request.method) {
    case HttpMethod::Get: {
        const TokenCheck check = check_token(request, tokens);
        if (token_check)
            *token_check = check;
        // V1 serves every GET, token or not (Firecracker only counts missing and invalid ones).
        if (store.version() == Version::V1)
            return serialize(serve_get(request, store));
        return serialize(get_v2(request, store, check));
    }
    case HttpMethod::Put: return serialize(put_token(request, tokens));
    case HttpMethod::Patch:
    case HttpMethod::Delete: break;
    }
    Response response = plain(request, 405, std::string(kMethodNotAllowed));
    response.allow_get_put = true;
    return serialize(response);
}

} // namespace vessel::mmds

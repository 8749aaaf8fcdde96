#include "api/json_body.h"

#include <cmath>

namespace vessel::api {

namespace {

// serde_json's recursion limit: deeper documents are refused, and the syntax check below
// (recursive) stays within a small, fixed stack.
constexpr int kMaxDepth = 128;

// A syntax check that finds the first error the way serde_json reports it (its words, and the
// line/column of the offending byte, or of the last byte for an unexpected end). nlohmann-json
// does the real parsing once this passes; it only says "syntax error" with a byte offset.
class SyntaxCheck {
public:
    explicit SyntaxCheck(std::string_view text)
        : m_text(text)
    {
    }

    std::optional<std::string> run()
    {
        skip_ws();
        if (!value(0))
            return m_error;
        skip_ws();
        if (m_pos < m_text.size())
            return at_pos("trailing characters");
        return std::nullopt;
    }

private:
    bool eof() const { return m_pos >= m_text.size(); }
    char peek() const { return m_text[m_pos]; }

    void skip_ws()
    {
        while (!eof() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r'))
            ++m_pos;
    }

    // Line and column (1-based) of byte `index`; serde counts columns in bytes.
    std::string position(size_t index) const
    {
        size_t line = 1, column = 0;
        for (size_t i = 0; i < index && i < m_text.size(); ++i) {
            if (m_text[i] == '\n') {
                ++line;
                column = 0;
            } else {
                ++column;
            }
        }
        return fmt::format("line {} column {}", line, column);
    }

    std::string at_pos(std::string_view what) { return fmt::format("{} at {}", what, position(m_pos + 1)); }

    bool fail(std::string_view what)
    {
        m_error = at_pos(what);
        return false;
    }

    bool fail_eof(std::string_view what)
    {
        m_error = fmt::format("{} at {}", what, position(m_text.size()));
        return false;
    }

    bool value(int depth)
    {
        if (eof())
            return fail_eof("EOF while parsing a value");
        switch (peek()) {
        case '{': return object(depth + 1);
        case '[': return array(depth + 1);
        case '"': return string();
        case 't': return ident("true");
        case 'f': return ident("false");
        case 'n': return ident("null");
        default:
            if (peek() == '-' || (peek() >= '0' && peek() <= '9'))
                return number();
            return fail("expected value");
        }
    }

    bool ident(std::string_view word)
    {
        for (char c : word) {
            if (eof())
                return fail_eof("EOF while parsing a value");
            if (peek() != c)
                return fail("expected ident");
            ++m_pos;
        }
        return true;
    }

    bool digits()
    {
        if (eof())
            return fail_eof("EOF while parsing a value");
        if (peek() < '0' || peek() > '9')
            return fail("invalid number");
        while (!eof() && peek() >= '0' && peek() <= '9')
            ++m_pos;
        return true;
    }

    bool number()
    {
        if (peek() == '-')
            ++m_pos;
        if (eof())
            return fail_eof("EOF while parsing a value");
        if (peek() == '0') {
            ++m_pos;
            if (!eof() && peek() >= '0' && peek() <= '9')
                return fail("invalid number");
        } else if (!digits()) {
            return false;
        }
        if (!eof() && peek() == '.') {
            ++m_pos;
            if (!digits())
                return false;
        }
        if (!eof() && (peek() == 'e' || peek() == 'E')) {
            ++m_pos;
            if (!eof() && (peek() == '+' || peek() == '-'))
                ++m_pos;
            if (!digits())
                return false;
        }
        return true;
    }

    bool hex4()
    {
        for (int i = 0; i < 4; ++i) {
            if (eof())
                return fail_eof("EOF while parsing a string");
            if (!std::isxdigit(static_cast<unsigned char>(peek())))
                return fail("invalid escape");
            ++m_pos;
        }
        return true;
    }

    bool string()
    {
        ++m_pos; // opening quote
        for (;;) {
            if (eof())
                return fail_eof("EOF while parsing a string");
            unsigned char c = static_cast<unsigned char>(peek());
            if (c == '"') {
                ++m_pos;
                return true;
            }
            if (c < 0x20)
                return fail("control character (\\u0000-\\u001F) found while parsing a string");
            ++m_pos;
            if (c == '\\') {
                if (eof())
                    return fail_eof("EOF while parsing a string");
                char e = peek();
                ++m_pos;
                if (e == 'u') {
                    if (!hex4())
                        return false;
                } else if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) {
                    --m_pos;
                    return fail("invalid escape");
                }
            }
        }
    }

    bool array(int depth)
    {
        if (depth > kMaxDepth)
            return fail("recursion limit exceeded");
        ++m_pos; // [
        skip_ws();
        if (eof())
            return fail_eof("EOF while parsing a list");
        if (peek() == ']') {
            ++m_pos;
            return true;
        }
        for (;;) {
            if (!value(depth))
                return false;
            skip_ws();
            if (eof())
                return fail_eof("EOF while parsing a list");
            if (peek() == ']') {
                ++m_pos;
                return true;
            }
            if (peek() != ',')
                return fail("expected `,` or `]`");
            ++m_pos;
            skip_ws();
            if (!eof() && peek() == ']')
                return fail("trailing comma");
        }
    }

    bool object(int depth)
    {
        if (depth > kMaxDepth)
            return fail("recursion limit exceeded");
        ++m_pos; // {
        skip_ws();
        if (eof())
            return fail_eof("EOF while parsing an object");
        if (peek() == '}') {
            ++m_pos;
            return true;
        }
        for (;;) {
            if (eof())
                return fail_eof("EOF while parsing an object");
            if (peek() != '"')
                return fail("key must be a string");
            if (!string())
                return false;
            skip_ws();
            if (eof())
                return fail_eof("EOF while parsing an object");
            if (peek() != ':')
                return fail("expected `:`");
            ++m_pos;
            skip_ws();
            if (!value(depth))
                return false;
            skip_ws();
            if (eof())
                return fail_eof("EOF while parsing an object");
            if (peek() == '}') {
                ++m_pos;
                return true;
            }
            if (peek() != ',')
                return fail("expected `,` or `}`");
            ++m_pos;
            skip_ws();
            if (!eof() && peek() == '}')
                return fail("trailing comma");
        }
    }

    std::string_view m_text;
    size_t m_pos { 0 };
    std::string m_error;
};

std::string quoted_names(std::initializer_list<std::string_view> names, std::string_view last_joiner)
{
    std::string out;
    size_t i = 0;
    for (auto name : names) {
        if (i > 0)
            out += (i + 1 == names.size()) ? last_joiner : ", ";
        out += fmt::format("`{}`", name);
        ++i;
    }
    return out;
}

bool unsigned_range(std::string_view type_name, uint64_t& max)
{
    if (type_name == "u8")
        max = UINT8_MAX;
    else if (type_name == "u16")
        max = UINT16_MAX;
    else if (type_name == "u32")
        max = UINT32_MAX;
    else if (type_name == "u64" || type_name == "usize")
        max = UINT64_MAX;
    else
        return false;
    return true;
}

} // namespace

Result<nlohmann::json> parse_json(std::string_view text)
{
    if (auto error = SyntaxCheck(text).run())
        return Error(*error);
    auto doc = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) // e.g. invalid UTF-8, which the check above does not look at
        return make_error("invalid unicode code point");
    return doc;
}

std::string describe_json_value(const nlohmann::json& value)
{
    switch (value.type()) {
    case nlohmann::json::value_t::string:
        return fmt::format("string {}", value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    case nlohmann::json::value_t::number_unsigned:
    case nlohmann::json::value_t::number_integer: return fmt::format("integer `{}`", value.dump());
    case nlohmann::json::value_t::number_float: {
        double d = value.get<double>();
        // serde prints floats with a fractional part always ("1.0").
        std::string text = (std::floor(d) == d && std::abs(d) < 1e16) ? fmt::format("{:.1f}", d) : fmt::format("{}", d);
        return fmt::format("floating point `{}`", text);
    }
    case nlohmann::json::value_t::boolean: return fmt::format("boolean `{}`", value.get<bool>() ? "true" : "false");
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::object: return "map";
    case nlohmann::json::value_t::array: return "sequence";
    default: return "value";
    }
}

std::string expected_one_of(std::initializer_list<std::string_view> names)
{
    if (names.size() == 0)
        return "there are no fields";
    if (names.size() == 1)
        return fmt::format("expected {}", quoted_names(names, ""));
    if (names.size() == 2)
        return fmt::format("expected {}", quoted_names(names, " or "));
    return fmt::format("expected one of {}", quoted_names(names, ", "));
}

Result<JsonObject> JsonObject::read(
    const nlohmann::json& value, std::string_view struct_name, std::initializer_list<std::string_view> fields)
{
    if (!value.is_object())
        return make_error("invalid type: {}, expected struct {}", describe_json_value(value), struct_name);
    for (auto& [key, _] : value.items()) {
        bool known = false;
        for (auto f : fields)
            known = known || f == key;
        if (!known)
            return make_error("unknown field `{}`, {}", key, expected_one_of(fields));
    }
    return JsonObject(value);
}

Result<JsonObject> JsonObject::parse(
    std::string_view body, std::string_view struct_name, std::initializer_list<std::string_view> fields)
{
    auto doc = TRY(parse_json(body));
    return read(doc, struct_name, fields);
}

bool JsonObject::has(std::string_view field) const
{
    return m_value.contains(field);
}

const nlohmann::json* JsonObject::raw(std::string_view field) const
{
    auto it = m_value.find(field);
    if (it == m_value.end() || it->is_null())
        return nullptr;
    return &*it;
}

Error JsonObject::missing(std::string_view field) const
{
    return make_error("missing field `{}`", field);
}

Result<std::optional<std::string>> JsonObject::opt_string(std::string_view field) const
{
    const auto* v = raw(field);
    if (!v)
        return std::optional<std::string> {};
    if (!v->is_string())
        return make_error("invalid type: {}, expected a string", describe_json_value(*v));
    return std::optional<std::string>(v->get<std::string>());
}

Result<std::string> JsonObject::string(std::string_view field) const
{
    auto v = TRY(opt_string(field));
    if (!v)
        return missing(field);
    return *v;
}

Result<std::optional<bool>> JsonObject::opt_bool(std::string_view field) const
{
    const auto* v = raw(field);
    if (!v)
        return std::optional<bool> {};
    if (!v->is_boolean())
        return make_error("invalid type: {}, expected a boolean", describe_json_value(*v));
    return std::optional<bool>(v->get<bool>());
}

Result<bool> JsonObject::boolean(std::string_view field) const
{
    auto v = TRY(opt_bool(field));
    if (!v)
        return missing(field);
    return *v;
}

Result<std::optional<uint64_t>> JsonObject::opt_unsigned(std::string_view field, std::string_view type_name) const
{
    const auto* v = raw(field);
    if (!v)
        return std::optional<uint64_t> {};
    uint64_t max = 0;
    if (!unsigned_range(type_name, max))
        return make_error("internal error: unknown integer type {}", type_name);
    if (v->is_number_integer() && !v->is_number_unsigned())
        return make_error("invalid value: integer `{}`, expected {}", v->get<int64_t>(), type_name);
    if (!v->is_number_unsigned())
        return make_error("invalid type: {}, expected {}", describe_json_value(*v), type_name);
    uint64_t n = v->get<uint64_t>();
    if (n > max)
        return make_error("invalid value: integer `{}`, expected {}", n, type_name);
    return std::optional<uint64_t>(n);
}

Result<uint64_t> JsonObject::unsigned_int(std::string_view field, std::string_view type_name) const
{
    auto v = TRY(opt_unsigned(field, type_name));
    if (!v)
        return missing(field);
    return *v;
}

Result<std::optional<std::string>> JsonObject::opt_variant(
    std::string_view field, std::initializer_list<std::string_view> variants) const
{
    const auto* v = raw(field);
    if (!v)
        return std::optional<std::string> {};
    if (!v->is_string())
        return make_error("invalid type: {}, expected variant identifier", describe_json_value(*v));
    std::string s = v->get<std::string>();
    for (auto variant : variants)
        if (variant == s)
            return std::optional<std::string>(s);
    return make_error("unknown variant `{}`, {}", s, expected_one_of(variants));
}

Result<std::string> JsonObject::variant(std::string_view field, std::initializer_list<std::string_view> variants) const
{
    auto v = TRY(opt_variant(field, variants));
    if (!v)
        return missing(field);
    return *v;
}

Result<std::optional<JsonObject>> JsonObject::opt_object(
    std::string_view field, std::string_view struct_name, std::initializer_list<std::string_view> fields) const
{
    const auto* v = raw(field);
    if (!v)
        return std::optional<JsonObject> {};
    return std::optional<JsonObject>(TRY(read(*v, struct_name, fields)));
}

} // namespace vessel::api

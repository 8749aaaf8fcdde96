#include "mmds/data_store.h"

#include <vector>

namespace vessel::mmds {

using nlohmann::json;

namespace {

// Records the first parse error's message; accepts every value (the DOM parse did the work).
// nlohmann's SAX interface hands errors over as objects, so nothing is thrown.
class ErrorMessageSax final : public nlohmann::json_sax<json> {
public:
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return true; }
    bool key(string_t&) override { return true; }
    bool end_object() override { return true; }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) override
    {
        message = ex.what();
        // Drop nlohmann's "[json.exception.parse_error.101] " tag: the user wants the reason.
        if (!message.empty() && message.front() == '[') {
            const size_t end = message.find("] ");
            if (end != std::string::npos)
                message.erase(0, end + 2);
        }
        return false;
    }

    std::string message;
};

// Nesting depth check without recursion (a hand-built value may be arbitrarily deep).
bool deeper_than(const json& root, size_t limit)
{
    std::vector<std::pair<const json*, size_t>> stack { { &root, 1 } };
    while (!stack.empty()) {
        auto [value, depth] = stack.back();
        stack.pop_back();
        if (!value->is_structured())
            continue;
        if (depth > limit)
            return true;
        for (const auto& child : *value)
            stack.push_back({ &child, depth + 1 });
    }
    return false;
}

// serde_json's parse_index: no sign, no leading zeros, decimal digits only.
bool parse_index(std::string_view token, size_t& index)
{
    if (token.empty() || token.front() == '+' || (token.front() == '0' && token.size() != 1))
        return false;
    size_t value = 0;
    for (char c : token) {
        if (c < '0' || c > '9')
            return false;
        const size_t digit = static_cast<size_t>(c - '0');
        if (value > (SIZE_MAX - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    index = value;
    return true;
}

// One pointer token with "~1" → "/" then "~0" → "~", in serde_json's order.
std::string unescape_token(std::string_view token)
{
    std::string step;
    step.reserve(token.size());
    for (size_t i = 0; i < token.size(); ++i) {
        if (token[i] == '~' && i + 1 < token.size() && token[i + 1] == '1') {
            step += '/';
            ++i;
        } else {
            step += token[i];
        }
    }
    std::string out;
    out.reserve(step.size());
    for (size_t i = 0; i < step.size(); ++i) {
        if (step[i] == '~' && i + 1 < step.size() && step[i + 1] == '0') {
            out += '~';
            ++i;
        } else {
            out += step[i];
        }
    }
    return out;
}

} // namespace

bool is_limit_exceeded(const Error& error)
{
    return error.message() == kLimitExceededMessage;
}

bool is_not_initialized(const Error& error)
{
    return error.message() == kNotInitializedMessage;
}

Result<json> parse_json(std::string_view text)
{
    bool too_deep = false;
    const json::parser_callback_t depth_check = [&too_deep](int depth, json::parse_event_t event, json&) {
        // `depth` counts the containers already open around this one.
        if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start)
            && static_cast<size_t>(depth) >= kMaxJsonDepth)
            too_deep = true;
        return true;
    };
    json value = json::parse(text.begin(), text.end(), depth_check, /*allow_exceptions=*/false);
    if (value.is_discarded()) {
        ErrorMessageSax sax;
        (void)json::sax_parse(text.begin(), text.end(), &sax);
        return Error(sax.message.empty() ? std::string("invalid JSON") : sax.message);
    }
    if (too_deep)
        return make_error("recursion limit exceeded (JSON nested deeper than {} levels)", kMaxJsonDepth);
    return value;
}

std::string to_compact_json(const json& value)
{
    return value.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

Result<void> DataStore::check_fits(const json& value) const
{
    if (deeper_than(value, kMaxJsonDepth))
        return make_error("recursion limit exceeded (JSON nested deeper than {} levels)", kMaxJsonDepth);
    // Firecracker: an error only when strictly longer than the limit.
    if (to_compact_json(value).size() > m_size_limit)
        return Error(std::string(kLimitExceededMessage));
    return {};
}

Result<void> DataStore::put(json value)
{
    std::lock_guard lock(m_mutex);
    TRY(check_fits(value));
    m_data = std::move(value);
    m_initialized = true;
    return {};
}

Result<void> DataStore::put_json(std::string_view text)
{
    return put(TRY(parse_json(text)));
}

Result<void> DataStore::patch(const json& patch)
{
    // Checked before taking the lock: merge_patch recurses along the patch's depth.
    if (deeper_than(patch, kMaxJsonDepth))
        return make_error("recursion limit exceeded (JSON nested deeper than {} levels)", kMaxJsonDepth);
    std::lock_guard lock(m_mutex);
    if (!m_initialized)
        return Error(std::string(kNotInitializedMessage));
    // nlohmann's merge_patch is RFC 7396 exactly as Firecracker's json_patch: an object patch
    // turns a non-object target into {}, null members delete keys, other members recurse (a
    // missing key starts as null), and a non-object patch replaces the target. Work on a copy
    // so that a result over the limit leaves the store as it was.
    json merged = m_data;
    merged.merge_patch(patch);
    TRY(check_fits(merged));
    m_data = std::move(merged);
    return {};
}

Result<void> DataStore::patch_json(std::string_view text)
{
    return patch(TRY(parse_json(text)));
}

std::string DataStore::to_json() const
{
    std::lock_guard lock(m_mutex);
    if (m_data.is_null())
        return "{}";
    return to_compact_json(m_data);
}

json DataStore::value() const
{
    std::lock_guard lock(m_mutex);
    return m_data;
}

bool DataStore::initialized() const
{
    std::lock_guard lock(m_mutex);
    return m_initialized;
}

void DataStore::clear()
{
    std::lock_guard lock(m_mutex);
    m_data = nullptr;
    m_initialized = false;
}

size_t DataStore::size_limit() const
{
    std::lock_guard lock(m_mutex);
    return m_size_limit;
}

void DataStore::set_size_limit(size_t limit)
{
    std::lock_guard lock(m_mutex);
    m_size_limit = limit;
}

Version DataStore::version() const
{
    std::lock_guard lock(m_mutex);
    return m_version;
}

void DataStore::set_version(Version version)
{
    std::lock_guard lock(m_mutex);
    m_version = version;
}

bool DataStore::imds_compat() const
{
    std::lock_guard lock(m_mutex);
    return m_imds_compat;
}

void DataStore::set_imds_compat(bool on)
{
    std::lock_guard lock(m_mutex);
    m_imds_compat = on;
}

Lookup DataStore::get(std::string_view path, OutputFormat format) const
{
    if (!path.empty() && path.back() == '/')
        path.remove_suffix(1);
    std::lock_guard lock(m_mutex);
    const json* value = resolve_pointer(m_data, path);
    if (!value)
        return { Lookup::Status::NotFound, {} };
    Lookup result { Lookup::Status::Ok, {} };
    if (m_imds_compat || format == OutputFormat::Imds) {
        if (!format_imds(*value, result.body))
            return { Lookup::Status::UnsupportedType, {} };
    } else {
        result.body = to_compact_json(*value);
    }
    return result;
}

const json* resolve_pointer(const json& root, std::string_view pointer)
{
    if (pointer.empty())
        return &root;
    if (pointer.front() != '/')
        return nullptr;
    const json* target = &root;
    size_t start = 1;
    while (true) {
        const size_t slash = pointer.find('/', start);
        const std::string token = unescape_token(
            pointer.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
        if (target->is_object()) {
            auto it = target->find(token);
            if (it == target->end())
                return nullptr;
            target = &*it;
        } else if (target->is_array()) {
            size_t index = 0;
            if (!parse_index(token, index) || index >= target->size())
                return nullptr;
            target = &(*target)[index];
        } else {
            return nullptr;
        }
        if (slash == std::string_view::npos)
            return target;
        start = slash + 1;
    }
}

bool format_imds(const json& value, std::string& out)
{
    if (value.is_object()) {
        // Keys come sorted (nlohmann's object is a std::map), as serde_json's BTreeMap.
        bool first = true;
        for (auto it = value.begin(); it != value.end(); ++it) {
            if (!first)
                out += '\n';
            first = false;
            out += it.key();
            if (it.value().is_object())
                out += '/';
        }
        return true;
    }
    if (value.is_string()) {
        out += value.get_ref<const std::string&>();
        return true;
    }
    return false;
}

} // namespace vessel::mmds

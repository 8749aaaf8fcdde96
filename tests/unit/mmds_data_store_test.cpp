// The MMDS data store: PUT/PATCH semantics and limits as Firecracker's data_store.rs, and the
// guest's path look-ups in IMDS and JSON formats.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>

#include "mmds/data_store.h"

using namespace vessel;
using namespace vessel::mmds;
using nlohmann::json;

namespace {

// Firecracker's populate_mmds() document (mmds/mod.rs tests).
constexpr std::string_view kDocument = R"({
    "name": {"first": "John", "second": "Doe"},
    "age": 43,
    "phones": {"home": {"RO": "+401234567", "UK": "+441234567"}, "mobile": "+442345678"},
    "list": ["+401234567", "+441234567"],
    "flag": false,
    "nothing": null,
    "text": "{\n  \"hello\": \"world\"\n}",
    "empty": "",
    "emptyobj": {},
    "a/b": {"c~d": "escaped"}
})";

std::string get(const DataStore& store, std::string_view path, OutputFormat format = OutputFormat::Imds)
{
    Lookup lookup = store.get(path, format);
    if (lookup.status == Lookup::Status::NotFound)
        return "<not found>";
    if (lookup.status == Lookup::Status::UnsupportedType)
        return "<unsupported>";
    return lookup.body;
}

TEST(MmdsDataStore, NeverSetIsEmptyObject)
{
    DataStore store;
    EXPECT_EQ(store.to_json(), "{}");
    EXPECT_FALSE(store.initialized());
    EXPECT_EQ(store.size_limit(), 51200u);
    EXPECT_EQ(store.version(), Version::V1);
    EXPECT_FALSE(store.imds_compat());
}

TEST(MmdsDataStore, PutReplacesWithAnyValue)
{
    DataStore store;
    ASSERT_TRUE(store.put_json(R"({"b": 1, "a": {"z": true, "y": null}})").ok());
    EXPECT_TRUE(store.initialized());
    // Compact, keys sorted (serde_json's BTreeMap order).
    EXPECT_EQ(store.to_json(), R"({"a":{"y":null,"z":true},"b":1})");
    ASSERT_TRUE(store.put(json("string")).ok());
    EXPECT_EQ(store.to_json(), R"("string")");
    ASSERT_TRUE(store.put(json::array({ 1, 2 })).ok());
    EXPECT_EQ(store.to_json(), "[1,2]");
    // null is stored but reads back as {} over the API, as Firecracker.
    ASSERT_TRUE(store.put(nullptr).ok());
    EXPECT_EQ(store.to_json(), "{}");
    EXPECT_TRUE(store.initialized());
}

TEST(MmdsDataStore, PutLimitIsOnCompactLength)
{
    DataStore store(10);
    // "\"12345678\"" is exactly 10 bytes: allowed (only longer is refused).
    ASSERT_TRUE(store.put(json("12345678")).ok());
    auto result = store.put(json("123456789"));
    ASSERT_FALSE(result.ok());
    EXPECT_TRUE(is_limit_exceeded(result.error()));
    EXPECT_FALSE(is_not_initialized(result.error()));
    EXPECT_EQ(result.error().message(), "The MMDS patch request doesn't fit.");
    EXPECT_EQ(store.to_json(), R"("12345678")");
    // Whitespace in the text does not count: the compact form does.
    EXPECT_TRUE(store.put_json(R"(  {  "a" :  1234  }  )").ok()); // {"a":1234}: 10 bytes
    EXPECT_TRUE(is_limit_exceeded(store.put_json(R"({"a":12345})").error()));
}

TEST(MmdsDataStore, SizeLimitIsConfigurable)
{
    DataStore store;
    store.set_size_limit(5);
    EXPECT_TRUE(is_limit_exceeded(store.put_json(R"({"a":1})").error()));
    store.set_size_limit(7);
    EXPECT_TRUE(store.put_json(R"({"a":1})").ok());
    // A patch growing past the limit is refused and leaves the store as it was.
    auto patched = store.patch_json(R"({"b":2})");
    ASSERT_FALSE(patched.ok());
    EXPECT_TRUE(is_limit_exceeded(patched.error()));
    EXPECT_EQ(store.to_json(), R"({"a":1})");
}

TEST(MmdsDataStore, PatchBeforePutFails)
{
    DataStore store;
    auto result = store.patch_json(R"({"a":1})");
    ASSERT_FALSE(result.ok());
    EXPECT_EQ(result.error().message(), "The MMDS data store is not initialized.");
    EXPECT_TRUE(is_not_initialized(result.error()));
    EXPECT_FALSE(is_limit_exceeded(result.error()));
    EXPECT_EQ(store.to_json(), "{}");
}

TEST(MmdsDataStore, PatchIsRfc7396MergePatch)
{
    // RFC 7396 appendix A: (target, patch, result).
    struct Case {
        const char* target;
        const char* patch;
        const char* result;
    };
    const Case rfc[] = {
        { R"({"a":"b"})", R"({"a":"c"})", R"({"a":"c"})" },
        { R"({"a":"b"})", R"({"b":"c"})", R"({"a":"b","b":"c"})" },
        { R"({"a":"b"})", R"({"a":null})", R"({})" },
        { R"({"a":"b","b":"c"})", R"({"a":null})", R"({"b":"c"})" },
        { R"({"a":["b"]})", R"({"a":"c"})", R"({"a":"c"})" },
        { R"({"a":"c"})", R"({"a":["b"]})", R"({"a":["b"]})" },
        { R"({"a":{"b":"c"}})", R"({"a":{"b":"d","c":null}})", R"({"a":{"b":"d"}})" },
        { R"({"a":[{"b":"c"}]})", R"({"a":[1]})", R"({"a":[1]})" },
        { R"(["a","b"])", R"(["c","d"])", R"(["c","d"])" },
        { R"({"a":"b"})", R"(["c"])", R"(["c"])" },
        { R"({"a":"foo"})", "null", "{}" }, // a null patch replaces with null: GET shows {}
        { R"({"a":"foo"})", R"("bar")", R"("bar")" },
        { R"({"e":null})", R"({"a":1})", R"({"a":1,"e":null})" },
        { R"([1,2])", R"({"a":"b","c":null})", R"({"a":"b"})" },
        { R"({})", R"({"a":{"bb":{"ccc":null}}})", R"({"a":{"bb":{}}})" },
    };
    for (const auto& c : rfc) {
        DataStore store;
        ASSERT_TRUE(store.put_json(c.target).ok()) << c.target;
        ASSERT_TRUE(store.patch_json(c.patch).ok()) << c.patch;
        EXPECT_EQ(store.to_json(), c.result) << c.target << " + " << c.patch;
    }
}

TEST(MmdsDataStore, BadJsonIsAnErrorNotAnException)
{
    DataStore store;
    auto result = store.put_json("{\"a\": ");
    ASSERT_FALSE(result.ok());
    EXPECT_FALSE(is_limit_exceeded(result.error()));
    EXPECT_NE(result.error().message().find("parse error"), std::string::npos) << result.error().message();
    EXPECT_FALSE(store.initialized());
    EXPECT_FALSE(parse_json("").ok());
    EXPECT_FALSE(parse_json("{} x").ok());
    EXPECT_FALSE(parse_json("\"\xff\"").ok());
    ASSERT_TRUE(store.put_json("{}").ok());
    EXPECT_FALSE(store.patch_json("[").ok());
}

TEST(MmdsDataStore, NestingDepthIsBounded)
{
    auto nested = [](size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); };
    EXPECT_TRUE(parse_json(nested(kMaxJsonDepth)).ok());
    EXPECT_FALSE(parse_json(nested(kMaxJsonDepth + 1)).ok());
    EXPECT_FALSE(parse_json(nested(100000)).ok());
    // Values built by hand are checked as well.
    json deep = json::array();
    for (size_t i = 0; i < kMaxJsonDepth + 5; ++i)
        deep = json::array({ deep });
    DataStore store;
    EXPECT_FALSE(store.put(deep).ok());
    ASSERT_TRUE(store.put(json::object()).ok());
    EXPECT_FALSE(store.patch(json { { "a", deep } }).ok());
}

TEST(MmdsDataStore, ImdsFormat)
{
    DataStore store;
    ASSERT_TRUE(store.put_json(kDocument).ok());
    // Keys sorted, '/' only after object values (not arrays), no trailing newline.
    EXPECT_EQ(get(store, ""), "a/b/\nage\nempty\nemptyobj/\nflag\nlist\nname/\nnothing\nphones/\ntext");
    EXPECT_EQ(get(store, "/"), get(store, ""));
    EXPECT_EQ(get(store, "/name"), "first\nsecond");
    EXPECT_EQ(get(store, "/name/"), "first\nsecond");
    EXPECT_EQ(get(store, "/name/first"), "John");
    EXPECT_EQ(get(store, "/name/first/"), "John"); // a trailing slash on a leaf is fine
    EXPECT_EQ(get(store, "/phones/home/RO"), "+401234567");
    EXPECT_EQ(get(store, "/text"), "{\n  \"hello\": \"world\"\n}"); // strings raw
    EXPECT_EQ(get(store, "/empty"), "");
    EXPECT_EQ(get(store, "/emptyobj"), "");
    EXPECT_EQ(get(store, "/list/1"), "+441234567");
    for (const char* path : { "/age", "/flag", "/nothing", "/list" })
        EXPECT_EQ(get(store, path), "<unsupported>") << path;
    for (const char* path : { "/missing", "/name/third", "/list/2", "/list/01", "/list/+1", "/list/-1", "/age/x",
             "/name//first", "name", "/name/first//" })
        EXPECT_EQ(get(store, path), "<not found>") << path;
}

TEST(MmdsDataStore, JsonFormat)
{
    DataStore store;
    ASSERT_TRUE(store.put_json(kDocument).ok());
    EXPECT_EQ(get(store, "/name", OutputFormat::Json), R"({"first":"John","second":"Doe"})");
    EXPECT_EQ(get(store, "/name/first", OutputFormat::Json), R"("John")");
    EXPECT_EQ(get(store, "/age", OutputFormat::Json), "43");
    EXPECT_EQ(get(store, "/flag", OutputFormat::Json), "false");
    EXPECT_EQ(get(store, "/nothing", OutputFormat::Json), "null");
    EXPECT_EQ(get(store, "/list", OutputFormat::Json), R"(["+401234567","+441234567"])");
    EXPECT_EQ(get(store, "/missing", OutputFormat::Json), "<not found>");
}

TEST(MmdsDataStore, PointerEscapes)
{
    DataStore store;
    ASSERT_TRUE(store.put_json(kDocument).ok());
    EXPECT_EQ(get(store, "/a~1b/c~0d"), "escaped");
    ASSERT_TRUE(store.put_json(R"({"~1": "tilde-one", "/": "slash"})").ok());
    // "~01" is "~1" once unescaped ("~1" is replaced first, then "~0").
    EXPECT_EQ(get(store, "/~01"), "tilde-one");
    EXPECT_EQ(get(store, "/~1"), "slash");
}

TEST(MmdsDataStore, UninitializedLookups)
{
    DataStore store;
    EXPECT_EQ(get(store, "/", OutputFormat::Json), "null");
    EXPECT_EQ(get(store, "/", OutputFormat::Imds), "<unsupported>");
    EXPECT_EQ(get(store, "/latest", OutputFormat::Imds), "<not found>");
}

TEST(MmdsDataStore, ImdsCompatIgnoresRequestedFormat)
{
    DataStore store;
    ASSERT_TRUE(store.put_json(kDocument).ok());
    store.set_imds_compat(true);
    EXPECT_EQ(get(store, "/name", OutputFormat::Json), "first\nsecond");
    EXPECT_EQ(get(store, "/age", OutputFormat::Json), "<unsupported>");
    store.set_version(Version::V2);
    EXPECT_EQ(store.version(), Version::V2);
}

TEST(MmdsDataStore, ClearForgetsTheDocument)
{
    DataStore store;
    ASSERT_TRUE(store.put_json(kDocument).ok());
    store.clear();
    EXPECT_EQ(store.to_json(), "{}");
    EXPECT_TRUE(is_not_initialized(store.patch_json("{}").error()));
}

TEST(MmdsDataStore, ConcurrentWritersAndReaders)
{
    DataStore store;
    ASSERT_TRUE(store.put_json(R"({"n":0})").ok());
    std::atomic<bool> stop { false };
    std::thread reader([&] {
        while (!stop) {
            Lookup lookup = store.get("/n", OutputFormat::Json);
            ASSERT_EQ(lookup.status, Lookup::Status::Ok);
            ASSERT_FALSE(lookup.body.empty());
        }
    });
    for (int i = 1; i <= 2000; ++i)
        ASSERT_TRUE(store.patch(json { { "n", i } }).ok());
    stop = true;
    reader.join();
    EXPECT_EQ(store.to_json(), R"({"n":2000})");
}

} // namespace

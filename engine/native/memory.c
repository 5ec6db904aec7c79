// blr_memory: what Node cannot ask glibc's malloc from JS.
//   trim()  -> boolean   malloc_trim(0): hands the free pages of every malloc arena back to the
//                        system (the engine calls it once it is idle, after a full collection).
//   stats() -> object | undefined   mallinfo2(): bytes malloc holds, in use and free.
// Built by engine/native/build.ts at install; engine/native.ts loads it where it was built.
#include <dlfcn.h>
#include <malloc.h>
#include <stddef.h>
#include <node_api.h>

// mallinfo2 (glibc 2.33+) is looked up when called, so the addon loads on an older glibc too.
struct blr_mallinfo2 {
  size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost;
};
typedef struct blr_mallinfo2 (*blr_mallinfo2_fn)(void);

static napi_value trim(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  napi_get_boolean(env, malloc_trim(0) != 0, &result);
  return result;
}

static void set_number(napi_env env, napi_value object, const char* name, size_t value) {
  napi_value number;
  napi_create_double(env, (double)value, &number);
  napi_set_named_property(env, object, name, number);
}

static napi_value stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  blr_mallinfo2_fn mallinfo2 = (blr_mallinfo2_fn)dlsym(RTLD_DEFAULT, "mallinfo2");
  if (mallinfo2 == NULL) {
    napi_get_undefined(env, &result);
    return result;
  }
  struct blr_mallinfo2 m = mallinfo2();
  napi_create_object(env, &result);
  set_number(env, result, "heapBytes", m.arena);       // obtained from the system by sbrk/arenas
  set_number(env, result, "inUseBytes", m.uordblks);   // allocated in those
  set_number(env, result, "freeBytes", m.fordblks);    // free in those (held until trimmed)
  set_number(env, result, "mmappedBytes", m.hblkhd);   // large blocks, mapped on their own
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor properties[] = {
    {"trim", NULL, trim, NULL, NULL, NULL, napi_enumerable, NULL},
    {"stats", NULL, stats, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof(properties) / sizeof(properties[0]), properties);
  return exports;
}

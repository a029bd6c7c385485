/* egresswatch._suffixtable: the matcher's native suffix table.
 *
 * Two open-addressing hash tables (exact rules; suffix rules, carve-outs and interior markers)
 * of 32-byte slots: a 32-bit hash tag, a 32-bit value (index into the matcher's list of values,
 * plus an "interior" flag bit), the key length and, for keys of up to 23 bytes, the key itself
 * (longer keys live in a byte arena and the slot holds their offset). A probe therefore touches
 * one slot (half a cache line) and, for the common short key, nothing else; a hash match is
 * always confirmed by comparing the key bytes, so results are exact.
 *
 * Suffix hashes are computed right to left in one pass over the name (FNV-1a over the reversed
 * bytes, then a 64-bit finaliser), so the bottom-up walk (TLD -> longer suffixes, stopping at the
 * first absent suffix or at a rule with nothing under it) costs O(length).
 *
 * The table is built by the matcher (insert / insert_many / replace), then frozen by finish(),
 * which adds the interior markers and takes the per-value templates used to build results.
 * After finish() nothing on the lookup path writes to the object: it can be read from several
 * threads (every method runs under the GIL; none releases it).
 *
 * The object holds references only to the immutable objects it is given (the sentinel, the
 * result type, template tuples of rules and strings); none of them can refer back to it, so it
 * does not take part in cyclic garbage collection.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#define KEY_INLINE 23
#define MAX_KEY 255
#define VAL_MASK 0x0FFFFFFFu
#define VAL_NODE VAL_MASK /* an interior marker: a proper suffix of a key, not a rule itself */
#define F_INTERIOR 0x40000000u
#define MAX_LOAD_NUM 3 /* load factor at most 3/5 */
#define MAX_LOAD_DEN 5
#define FAST_MAX 254 /* longest raw name the fast path takes (253 octets plus a trailing dot) */
#define NAME_MAX_LEN 253
#define MAX_FOUND 256 /* keys are <= 255 bytes: at most 128 label boundaries fit in one */
#define HUGE_MIN (2u << 20)

#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

enum { KIND_DEFER = 0, KIND_RULE = 1, KIND_BULK = 2, KIND_CARVE = 3 };

typedef struct {
    uint32_t tag; /* 0: empty slot */
    uint32_t value;
    uint8_t len;
    uint8_t key[KEY_INLINE]; /* len <= KEY_INLINE: the key; else its arena offset (uint32) */
} Slot;

typedef struct {
    uint8_t *ctrl; /* one byte per slot: 0 empty, else 8 more bits of the hash */
    Slot *slots;
    size_t cap;
    size_t count;
    size_t alloc_bytes;
    void *map; /* the mapping behind slots, if mapped (else slots came from PyMem) */
    size_t map_len;
} Table;

typedef struct {
    int kind;
    PyObject *app;
    PyObject *apps;
    PyObject *regimes;
    PyObject *rule; /* the rule, or for a bulk list a rule whose field 0 is replaced per hit */
} Template;

typedef struct {
    PyObject_HEAD
    Table exact;
    Table suffix;
    uint8_t *arena;
    size_t arena_len;
    size_t arena_cap;
    Template *templates;
    Py_ssize_t ntemplates;
    PyObject *defer;
    PyTypeObject *match_type;
    Py_ssize_t rules;
    int frozen;
    int tld_rules;
    int hugepages;
} SuffixTable;

/* ---------------------------------------------------------------------------------------- */
/* hashing and probing                                                                        */

static inline uint64_t fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static inline uint64_t fold(uint64_t h, uint8_t c) { return (h ^ c) * FNV_PRIME; }

/* The hash of a whole key: the same right-to-left fold as the walk. */
static uint64_t hash_key(const uint8_t *s, size_t n)
{
    uint64_t h = FNV_BASIS;
    while (n > 0)
        h = fold(h, s[--n]);
    return h;
}

static inline size_t slot_index(uint64_t f, size_t cap)
{
    return (size_t)(((unsigned __int128)f * cap) >> 64);
}

static inline uint32_t slot_tag(uint64_t f)
{
    uint32_t t = (uint32_t)f;
    return t ? t : 1;
}

/* Bits 32-39 (slot_index uses the top bits, slot_tag the low 32). */
static inline uint8_t ctrl_tag(uint64_t f)
{
    uint8_t c = (uint8_t)(f >> 32);
    return c ? c : 1;
}

static inline const uint8_t *slot_key(const SuffixTable *st, const Slot *s)
{
    if (s->len <= KEY_INLINE)
        return s->key;
    uint32_t off;
    memcpy(&off, s->key, sizeof off);
    return st->arena + off;
}

/* The slot holding key, or NULL. h is the unfinalised fold of the key. */
static inline Slot *find(const SuffixTable *st, const Table *t, uint64_t h, const uint8_t *key,
                         size_t len)
{
    if (t->count == 0 || len > MAX_KEY)
        return NULL;
    uint64_t f = fmix64(h);
    uint32_t tag = slot_tag(f);
    uint8_t c8 = ctrl_tag(f);
    size_t i = slot_index(f, t->cap);
    /* The control bytes (one per slot, a megabyte or two at a million keys: they stay in the
     * CPU caches) decide a miss without touching a slot; a hit reads one slot, fetched while the
     * control bytes are scanned. */
    __builtin_prefetch(&t->slots[i]);
    for (;;) {
        uint8_t c = t->ctrl[i];
        if (c == 0)
            return NULL;
        if (c == c8) {
            Slot *s = &t->slots[i];
            if (s->tag == tag && s->len == len && memcmp(slot_key(st, s), key, len) == 0)
                return s;
        }
        if (++i == t->cap)
            i = 0;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* building                                                                                   */

static void table_free(Table *t)
{
    if (t->slots == NULL)
        return;
    if (t->map != NULL)
        munmap(t->map, t->map_len);
    else
        PyMem_Free(t->ctrl);
    t->slots = NULL;
    t->ctrl = NULL;
    t->map = NULL;
    t->cap = t->count = t->alloc_bytes = t->map_len = 0;
}

/* A zeroed slot array. Large ones are mapped on a 2 MiB boundary and, with hugepages, advised
 * into transparent huge pages: at a million keys every probe is a TLB miss otherwise. */
static int table_alloc(Table *t, size_t cap, int hugepages)
{
    if (cap > PY_SSIZE_T_MAX / (sizeof(Slot) + 1) / 2) {
        PyErr_NoMemory();
        return -1;
    }
    size_t ctrl_bytes = (cap + 63) & ~(size_t)63; /* slots start on a cache line */
    size_t bytes = ctrl_bytes + cap * sizeof(Slot);
    uint8_t *base;
    memset(t, 0, sizeof *t);
    if (bytes >= HUGE_MIN) {
        size_t rounded = (bytes + HUGE_MIN - 1) & ~(size_t)(HUGE_MIN - 1);
        size_t len = rounded + HUGE_MIN;
        void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) {
            PyErr_NoMemory();
            return -1;
        }
        uintptr_t aligned = ((uintptr_t)p + HUGE_MIN - 1) & ~(uintptr_t)(HUGE_MIN - 1);
#ifdef MADV_HUGEPAGE
        if (hugepages)
            (void)madvise((void *)aligned, rounded, MADV_HUGEPAGE);
#else
        (void)hugepages;
#endif
        t->map = p;
        t->map_len = len;
        base = (uint8_t *)aligned;
        t->alloc_bytes = rounded;
    }
    else {
        base = PyMem_Calloc(1, bytes);
        if (base == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->alloc_bytes = bytes;
    }
    t->ctrl = base;
    t->slots = (Slot *)(base + ctrl_bytes);
    t->cap = cap;
    return 0;
}

/* Capacity for n keys at the maximum load, with a little slack for the interior markers. */
static size_t cap_for(size_t n) { return n / MAX_LOAD_NUM * MAX_LOAD_DEN + n / 64 + 64; }

/* Place a slot (known to be absent) into t. */
static void place(const SuffixTable *st, Table *t, const Slot *src, uint64_t h)
{
    uint64_t f = fmix64(h);
    size_t i = slot_index(f, t->cap);
    while (t->ctrl[i] != 0)
        if (++i == t->cap)
            i = 0;
    t->slots[i] = *src;
    t->slots[i].tag = slot_tag(f);
    t->ctrl[i] = ctrl_tag(f);
    t->count++;
    (void)st;
}

static int table_resize(SuffixTable *st, Table *t, size_t cap)
{
    Table fresh = {0};
    if (table_alloc(&fresh, cap, st->hugepages) < 0)
        return -1;
    for (size_t i = 0; i < t->cap; i++) {
        const Slot *s = &t->slots[i];
        if (s->tag != 0)
            place(st, &fresh, s, hash_key(slot_key(st, s), s->len));
    }
    table_free(t);
    *t = fresh;
    return 0;
}

/* Room for n keys. Growing one key at a time (grow) doubles, so inserts stay amortised O(1). */
static int table_reserve(SuffixTable *st, Table *t, size_t n, int grow)
{
    if (n <= t->cap / MAX_LOAD_DEN * MAX_LOAD_NUM && t->slots != NULL)
        return 0;
    size_t cap = cap_for(n);
    if (grow && cap < t->cap * 2)
        cap = t->cap * 2;
    return table_resize(st, t, cap);
}

static int arena_add(SuffixTable *st, const uint8_t *key, size_t len, uint32_t *off)
{
    if (st->arena_len + len > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError, "suffix table arena is full");
        return -1;
    }
    if (st->arena_len + len > st->arena_cap) {
        size_t cap = st->arena_cap ? st->arena_cap * 2 : 4096;
        while (cap < st->arena_len + len)
            cap *= 2;
        uint8_t *p = PyMem_Realloc(st->arena, cap);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->arena = p;
        st->arena_cap = cap;
    }
    memcpy(st->arena + st->arena_len, key, len);
    *off = (uint32_t)st->arena_len;
    st->arena_len += len;
    return 0;
}

/* Insert key -> value if absent (returns 1), else leave it (returns 0, *existing set). */
static int table_insert(SuffixTable *st, Table *t, const uint8_t *key, size_t len, uint32_t value,
                        uint32_t *existing)
{
    uint64_t h = hash_key(key, len);
    Slot *s = find(st, t, h, key, len);
    if (s != NULL) {
        *existing = s->value;
        return 0;
    }
    if (table_reserve(st, t, t->count + 1, 1) < 0)
        return -1;
    Slot fresh;
    memset(&fresh, 0, sizeof fresh);
    fresh.value = value;
    fresh.len = (uint8_t)len;
    if (len <= KEY_INLINE)
        memcpy(fresh.key, key, len);
    else {
        uint32_t off;
        if (arena_add(st, key, len, &off) < 0)
            return -1;
        memcpy(fresh.key, &off, sizeof off);
    }
    place(st, t, &fresh, h);
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* argument helpers                                                                           */

/* The bytes of an ASCII key of at most MAX_KEY characters, or NULL with ValueError/TypeError. */
static const uint8_t *key_bytes(PyObject *key, Py_ssize_t *len)
{
    if (!PyUnicode_Check(key)) {
        PyErr_Format(PyExc_TypeError, "key must be str, not %.100s", Py_TYPE(key)->tp_name);
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(key) || PyUnicode_GET_LENGTH(key) > MAX_KEY) {
        PyErr_SetString(PyExc_ValueError, "key must be ASCII and at most 255 characters long");
        return NULL;
    }
    *len = PyUnicode_GET_LENGTH(key);
    return PyUnicode_1BYTE_DATA(key);
}

static int check_building(SuffixTable *st)
{
    if (st->frozen) {
        PyErr_SetString(PyExc_RuntimeError, "suffix table is frozen");
        return -1;
    }
    return 0;
}

static int check_frozen(SuffixTable *st)
{
    if (!st->frozen) {
        PyErr_SetString(PyExc_RuntimeError, "suffix table is not finished");
        return -1;
    }
    return 0;
}

static int value_arg(PyObject *obj, uint32_t *value)
{
    Py_ssize_t v = PyLong_AsSsize_t(obj);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0 || v >= (Py_ssize_t)VAL_NODE) {
        PyErr_SetString(PyExc_ValueError, "value index out of range");
        return -1;
    }
    *value = (uint32_t)v;
    return 0;
}

static PyObject *value_result(uint32_t v)
{
    v &= VAL_MASK;
    return PyLong_FromLong(v == VAL_NODE ? -2L : (long)v);
}

/* ---------------------------------------------------------------------------------------- */
/* type: construction and building methods                                                    */

static PyObject *ST_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"defer", "hugepages", NULL};
    PyObject *defer;
    int hugepages = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p:SuffixTable", kwlist, &defer, &hugepages))
        return NULL;
    SuffixTable *st = (SuffixTable *)type->tp_alloc(type, 0);
    if (st == NULL)
        return NULL;
    st->defer = Py_NewRef(defer);
    st->hugepages = hugepages;
    return (PyObject *)st;
}

static void ST_dealloc(SuffixTable *st)
{
    table_free(&st->exact);
    table_free(&st->suffix);
    PyMem_Free(st->arena);
    for (Py_ssize_t i = 0; i < st->ntemplates; i++) {
        Template *t = &st->templates[i];
        Py_XDECREF(t->app);
        Py_XDECREF(t->apps);
        Py_XDECREF(t->regimes);
        Py_XDECREF(t->rule);
    }
    PyMem_Free(st->templates);
    Py_XDECREF(st->defer);
    Py_XDECREF(st->match_type);
    Py_TYPE(st)->tp_free((PyObject *)st);
}

static PyObject *ST_reserve(SuffixTable *st, PyObject *args)
{
    int exact;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "pn:reserve", &exact, &n) || check_building(st) < 0)
        return NULL;
    if (n < 0 || (size_t)n > VAL_MASK) {
        PyErr_SetString(PyExc_ValueError, "bad size");
        return NULL;
    }
    if (table_reserve(st, exact ? &st->exact : &st->suffix, (size_t)n, 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *ST_insert(SuffixTable *st, PyObject *args)
{
    int exact;
    PyObject *key, *vobj;
    uint32_t value, existing = 0;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "pUO:insert", &exact, &key, &vobj) || check_building(st) < 0)
        return NULL;
    const uint8_t *k = key_bytes(key, &len);
    if (k == NULL || value_arg(vobj, &value) < 0)
        return NULL;
    int r = table_insert(st, exact ? &st->exact : &st->suffix, k, (size_t)len, value, &existing);
    if (r < 0)
        return NULL;
    return r ? PyLong_FromLong(-1) : value_result(existing);
}

static PyObject *ST_insert_many(SuffixTable *st, PyObject *args)
{
    int exact;
    PyObject *keys, *vobj;
    uint32_t value;
    if (!PyArg_ParseTuple(args, "pO!O:insert_many", &exact, &PyList_Type, &keys, &vobj) ||
        check_building(st) < 0 || value_arg(vobj, &value) < 0)
        return NULL;
    Table *t = exact ? &st->exact : &st->suffix;
    if (table_reserve(st, t, t->count + (size_t)PyList_GET_SIZE(keys), 0) < 0)
        return NULL;
    PyObject *present = PyList_New(0);
    if (present == NULL)
        return NULL;
    /* The list may not change under us: nothing here runs Python code. Re-read its size
     * anyway on every step. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        Py_ssize_t len;
        uint32_t existing;
        const uint8_t *k = key_bytes(PyList_GET_ITEM(keys, i), &len);
        if (k == NULL)
            goto error;
        int r = table_insert(st, t, k, (size_t)len, value, &existing);
        if (r < 0)
            goto error;
        if (r == 0) {
            PyObject *pos = PyLong_FromSsize_t(i);
            if (pos == NULL || PyList_Append(present, pos) < 0) {
                Py_XDECREF(pos);
                goto error;
            }
            Py_DECREF(pos);
        }
    }
    return present;
error:
    Py_DECREF(present);
    return NULL;
}

static PyObject *ST_replace(SuffixTable *st, PyObject *args)
{
    int exact;
    PyObject *key, *vobj;
    uint32_t value;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "pUO:replace", &exact, &key, &vobj) || check_building(st) < 0)
        return NULL;
    const uint8_t *k = key_bytes(key, &len);
    if (k == NULL || value_arg(vobj, &value) < 0)
        return NULL;
    Table *t = exact ? &st->exact : &st->suffix;
    Slot *s = find(st, t, hash_key(k, (size_t)len), k, (size_t)len);
    if (s == NULL) {
        PyErr_SetObject(PyExc_KeyError, key);
        return NULL;
    }
    s->value = (s->value & ~VAL_MASK) | value;
    Py_RETURN_NONE;
}

/* Interior markers: every proper suffix (after a dot) of every key is present; a key that is
 * such a suffix of another gets the interior flag. First pass: flag the keys that are suffixes
 * of others and collect the absent suffixes in a scratch table (no slot moves while the suffix
 * table is scanned); second pass: insert those as markers. */
static int add_markers(SuffixTable *st)
{
    Table *t = &st->suffix;
    Table pending = {0};
    int rc = -1;
    for (size_t i = 0; i < t->cap; i++) {
        const Slot *s = &t->slots[i];
        if (s->tag == 0)
            continue;
        const uint8_t *key = slot_key(st, s);
        size_t len = s->len;
        /* key may point into the arena, which a pending insert can move: copy it first. */
        uint8_t copy[MAX_KEY];
        memcpy(copy, key, len);
        for (size_t j = 0; j < len; j++) {
            if (copy[j] != '.')
                continue;
            const uint8_t *suf = copy + j + 1;
            size_t slen = len - j - 1;
            Slot *hit = find(st, t, hash_key(suf, slen), suf, slen);
            uint32_t existing;
            if (hit != NULL)
                hit->value |= F_INTERIOR;
            else if (table_insert(st, &pending, suf, slen, VAL_NODE, &existing) < 0)
                goto done;
        }
    }
    for (size_t i = 0; i < pending.cap; i++) {
        const Slot *s = &pending.slots[i];
        if (s->tag == 0)
            continue;
        uint8_t copy[MAX_KEY];
        uint32_t existing;
        memcpy(copy, slot_key(st, s), s->len);
        if (table_insert(st, t, copy, s->len, VAL_NODE, &existing) < 0)
            goto done;
    }
    rc = 0;
done:
    table_free(&pending);
    return rc;
}

static PyObject *ST_finish(SuffixTable *st, PyObject *args)
{
    PyObject *templates;
    PyTypeObject *match_type;
    if (!PyArg_ParseTuple(args, "O!O!:finish", &PyList_Type, &templates, &PyType_Type,
                          &match_type) ||
        check_building(st) < 0)
        return NULL;
    if (!PyType_IsSubtype(match_type, &PyTuple_Type) ||
        match_type->tp_basicsize != PyTuple_Type.tp_basicsize ||
        match_type->tp_itemsize != PyTuple_Type.tp_itemsize) {
        PyErr_SetString(PyExc_TypeError, "match_type must be a tuple subclass without a dict");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(templates);
    if (n >= (Py_ssize_t)VAL_NODE) {
        PyErr_SetString(PyExc_ValueError, "too many values");
        return NULL;
    }
    /* Every stored value must index a template: lookups then need no bounds check. */
    const Table *tables[2] = {&st->exact, &st->suffix};
    for (int k = 0; k < 2; k++)
        for (size_t i = 0; i < tables[k]->cap; i++) {
            const Slot *s = &tables[k]->slots[i];
            if (s->tag != 0 && (s->value & VAL_MASK) >= (uint32_t)n) {
                PyErr_SetString(PyExc_ValueError, "a stored value has no template");
                return NULL;
            }
        }
    Template *tpl = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Template));
    if (tpl == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(templates, i);
        long kind = 0;
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 5 ||
            (kind = PyLong_AsLong(PyTuple_GET_ITEM(item, 0))) < KIND_DEFER || kind > KIND_CARVE) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "template must be (kind, app, apps, regimes, rule)");
            goto error;
        }
        PyObject *rule = PyTuple_GET_ITEM(item, 4);
        if (kind == KIND_BULK &&
            !(PyTuple_Check(rule) && PyTuple_GET_SIZE(rule) >= 1 &&
              Py_TYPE(rule)->tp_basicsize == PyTuple_Type.tp_basicsize &&
              Py_TYPE(rule)->tp_itemsize == PyTuple_Type.tp_itemsize)) {
            PyErr_SetString(PyExc_TypeError, "a bulk template needs a rule tuple");
            goto error;
        }
        tpl[i].kind = (int)kind;
        tpl[i].app = Py_NewRef(PyTuple_GET_ITEM(item, 1));
        tpl[i].apps = Py_NewRef(PyTuple_GET_ITEM(item, 2));
        tpl[i].regimes = Py_NewRef(PyTuple_GET_ITEM(item, 3));
        tpl[i].rule = Py_NewRef(rule);
    }
    st->rules = (Py_ssize_t)(st->exact.count + st->suffix.count);
    st->tld_rules = 0;
    for (size_t i = 0; i < st->suffix.cap && !st->tld_rules; i++) {
        const Slot *s = &st->suffix.slots[i];
        if (s->tag != 0 && memchr(slot_key(st, s), '.', s->len) == NULL)
            st->tld_rules = 1;
    }
    if (add_markers(st) < 0)
        goto error;
    st->templates = tpl;
    st->ntemplates = n;
    st->match_type = (PyTypeObject *)Py_NewRef(match_type);
    st->frozen = 1;
    Py_RETURN_NONE;
error:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(tpl[i].app);
        Py_XDECREF(tpl[i].apps);
        Py_XDECREF(tpl[i].regimes);
        Py_XDECREF(tpl[i].rule);
    }
    PyMem_Free(tpl);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* lookups                                                                                    */

typedef struct {
    Py_ssize_t start;
    uint32_t value;
} Found;

/* The matcher's bottom-up walk over name[0:n]: the rules and carve-outs met, shortest first.
 * Stops at the first absent suffix or at a rule nothing longer hangs under. Without one-label
 * rules the TLD itself is not probed. */
static int walk(const SuffixTable *st, const uint8_t *s, Py_ssize_t n, Found *out)
{
    const Table *t = &st->suffix;
    uint64_t h = FNV_BASIS;
    int nfound = 0;
    int skip = !st->tld_rules;
    if (t->count == 0)
        return 0;
    for (Py_ssize_t i = n - 1;; i--) {
        if (i < 0 || s[i] == '.') {
            if (skip) {
                skip = 0;
            }
            else {
                Py_ssize_t start = i + 1;
                const Slot *slot = find(st, t, h, s + start, (size_t)(n - start));
                if (slot == NULL)
                    return nfound;
                uint32_t v = slot->value;
                if ((v & VAL_MASK) != VAL_NODE) {
                    out[nfound].start = start;
                    out[nfound].value = v & VAL_MASK;
                    nfound++;
                    if (!(v & F_INTERIOR) || nfound == MAX_FOUND)
                        return nfound;
                }
            }
            if (i < 0)
                return nfound;
        }
        if (n - i > MAX_KEY) /* every longer suffix is longer than any key */
            return nfound;
        h = fold(h, s[i]);
    }
}

/* name[0:end] is a run of labels of 1-63 characters [a-z0-9_-] (hostnames.is_matchable). */
static int labels_ok(const uint8_t *s, Py_ssize_t end)
{
    int len = 0;
    for (Py_ssize_t i = 0; i < end; i++) {
        uint8_t c = s[i];
        if (c == '.') {
            if (len == 0)
                return 0;
            len = 0;
        }
        else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            if (++len > 63)
                return 0;
        }
        else
            return 0;
    }
    return len > 0;
}

static PyObject *ascii_str(const uint8_t *s, Py_ssize_t n)
{
    PyObject *o = PyUnicode_New(n, 127);
    if (o != NULL)
        memcpy(PyUnicode_1BYTE_DATA(o), s, (size_t)n);
    return o;
}

static PyObject *new_tuple_of(PyTypeObject *type, Py_ssize_t n)
{
    if (type == &PyTuple_Type)
        return PyTuple_New(n);
    return type->tp_alloc(type, n);
}

/* Match(name, app, apps, rule, regimes) for value v found at name[start:]. name_obj, when not
 * NULL, is a str equal to name[0:n]. */
static PyObject *build_match(const SuffixTable *st, const Template *tp, const uint8_t *s,
                             Py_ssize_t n, Py_ssize_t start, PyObject *name_obj)
{
    PyObject *name = name_obj ? Py_NewRef(name_obj) : ascii_str(s, n);
    if (name == NULL)
        return NULL;
    PyObject *rule;
    if (tp->kind == KIND_BULK) {
        PyObject *key = start == 0 ? Py_NewRef(name) : ascii_str(s + start, n - start);
        if (key == NULL) {
            Py_DECREF(name);
            return NULL;
        }
        Py_ssize_t fields = PyTuple_GET_SIZE(tp->rule);
        rule = new_tuple_of(Py_TYPE(tp->rule), fields);
        if (rule == NULL) {
            Py_DECREF(key);
            Py_DECREF(name);
            return NULL;
        }
        PyTuple_SET_ITEM(rule, 0, key);
        for (Py_ssize_t i = 1; i < fields; i++)
            PyTuple_SET_ITEM(rule, i, Py_NewRef(PyTuple_GET_ITEM(tp->rule, i)));
    }
    else
        rule = Py_NewRef(tp->rule);
    PyObject *m = new_tuple_of(st->match_type, 5);
    if (m == NULL) {
        Py_DECREF(rule);
        Py_DECREF(name);
        return NULL;
    }
    PyTuple_SET_ITEM(m, 0, name);
    PyTuple_SET_ITEM(m, 1, Py_NewRef(tp->app));
    PyTuple_SET_ITEM(m, 2, Py_NewRef(tp->apps));
    PyTuple_SET_ITEM(m, 3, rule);
    PyTuple_SET_ITEM(m, 4, Py_NewRef(tp->regimes));
    return m;
}

/* Matcher._lookup for an ASCII name s[0:n], resolved here when that is simple (one rule or
 * carve-out found); the defer sentinel otherwise. With validate, a match also needs the
 * labels left of its rule to be valid (hostnames.is_matchable), else it is no match. */
static PyObject *resolve(const SuffixTable *st, const uint8_t *s, Py_ssize_t n,
                         PyObject *name_obj, int validate)
{
    if (st->exact.count != 0 && n <= MAX_KEY) {
        const Slot *slot = find(st, &st->exact, hash_key(s, (size_t)n), s, (size_t)n);
        if (slot != NULL) {
            const Template *tp = &st->templates[slot->value & VAL_MASK];
            if (tp->kind != KIND_RULE && tp->kind != KIND_BULK)
                return Py_NewRef(st->defer);
            if (validate && n > NAME_MAX_LEN)
                Py_RETURN_NONE;
            return build_match(st, tp, s, n, 0, name_obj);
        }
    }
    Found found[MAX_FOUND];
    int nfound = walk(st, s, n, found);
    if (nfound == 0)
        Py_RETURN_NONE;
    if (nfound > 1)
        return Py_NewRef(st->defer);
    const Template *tp = &st->templates[found[0].value];
    if (tp->kind == KIND_CARVE)
        Py_RETURN_NONE;
    if (tp->kind != KIND_RULE && tp->kind != KIND_BULK)
        return Py_NewRef(st->defer);
    if (validate) {
        Py_ssize_t end = found[0].start - 1;
        if (n > NAME_MAX_LEN || (end >= 0 && (end == 0 || !labels_ok(s, end))))
            Py_RETURN_NONE;
    }
    return build_match(st, tp, s, n, found[0].start, name_obj);
}

static PyObject *ST_match(SuffixTable *st, PyObject *host)
{
    if (check_frozen(st) < 0)
        return NULL;
    /* Matcher.match's fast path: a plain ASCII str; ports, brackets, IP literals, Unicode,
     * bytes and anything else are deferred to the careful Python path. */
    if (!PyUnicode_CheckExact(host) || !PyUnicode_IS_ASCII(host))
        return Py_NewRef(st->defer);
    Py_ssize_t n = PyUnicode_GET_LENGTH(host);
    if (n < 1 || n > FAST_MAX)
        return Py_NewRef(st->defer);
    const uint8_t *src = PyUnicode_1BYTE_DATA(host);
    uint8_t buf[FAST_MAX + 2];
    int changed = 0, colon = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint8_t c = src[i];
        uint8_t l = (uint8_t)(c - 'A') < 26 ? (uint8_t)(c + 32) : c;
        changed |= l != c;
        colon |= c == ':';
        buf[i] = l;
    }
    if (buf[n - 1] == '.') {
        n--;
        changed = 1;
    }
    if (n == 0 || buf[n - 1] <= ':' || colon)
        return Py_NewRef(st->defer);
    return resolve(st, buf, n, changed ? NULL : host, 1);
}

static PyObject *ST_lookup(SuffixTable *st, PyObject *name)
{
    if (check_frozen(st) < 0)
        return NULL;
    if (!PyUnicode_CheckExact(name) || !PyUnicode_IS_ASCII(name))
        return Py_NewRef(st->defer);
    return resolve(st, PyUnicode_1BYTE_DATA(name), PyUnicode_GET_LENGTH(name), name, 0);
}

static PyObject *ST_walk(SuffixTable *st, PyObject *name)
{
    Py_ssize_t n;
    if (check_frozen(st) < 0)
        return NULL;
    if (!PyUnicode_Check(name)) {
        PyErr_Format(PyExc_TypeError, "name must be str, not %.100s", Py_TYPE(name)->tp_name);
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(name)) {
        PyErr_SetString(PyExc_ValueError, "name must be ASCII");
        return NULL;
    }
    n = PyUnicode_GET_LENGTH(name);
    Found found[MAX_FOUND];
    int nfound = walk(st, PyUnicode_1BYTE_DATA(name), n, found);
    PyObject *out = PyList_New(nfound);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < nfound; i++) {
        PyObject *pair = Py_BuildValue("(nI)", found[i].start, (unsigned int)found[i].value);
        if (pair == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, pair);
    }
    return out;
}

static PyObject *ST_get(SuffixTable *st, PyObject *args)
{
    int exact;
    PyObject *key;
    if (!PyArg_ParseTuple(args, "pU:get", &exact, &key))
        return NULL;
    if (!PyUnicode_IS_ASCII(key) || PyUnicode_GET_LENGTH(key) > MAX_KEY)
        return PyLong_FromLong(-1);
    const uint8_t *k = PyUnicode_1BYTE_DATA(key);
    size_t len = (size_t)PyUnicode_GET_LENGTH(key);
    const Slot *s = find(st, exact ? &st->exact : &st->suffix, hash_key(k, len), k, len);
    return s == NULL ? PyLong_FromLong(-1) : value_result(s->value);
}

static PyObject *ST_get_nbytes(SuffixTable *st, void *closure)
{
    (void)closure;
    return PyLong_FromSize_t(st->exact.alloc_bytes + st->suffix.alloc_bytes + st->arena_cap +
                             (size_t)st->ntemplates * sizeof(Template));
}

static PyObject *ST_get_rules(SuffixTable *st, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(st->frozen ? st->rules
                                         : (Py_ssize_t)(st->exact.count + st->suffix.count));
}

static PyObject *ST_get_tld_rules(SuffixTable *st, void *closure)
{
    (void)closure;
    return PyBool_FromLong(st->tld_rules);
}

static PyObject *ST_get_frozen(SuffixTable *st, void *closure)
{
    (void)closure;
    return PyBool_FromLong(st->frozen);
}

static PyMethodDef ST_methods[] = {
    {"reserve", (PyCFunction)ST_reserve, METH_VARARGS, "reserve(exact, n): room for n keys."},
    {"insert", (PyCFunction)ST_insert, METH_VARARGS,
     "insert(exact, key, value) -> -1 if inserted, else the value already stored."},
    {"insert_many", (PyCFunction)ST_insert_many, METH_VARARGS,
     "insert_many(exact, keys, value) -> positions of the keys that were already present."},
    {"replace", (PyCFunction)ST_replace, METH_VARARGS, "replace(exact, key, value)."},
    {"finish", (PyCFunction)ST_finish, METH_VARARGS,
     "finish(templates, match_type): add interior markers and freeze."},
    {"get", (PyCFunction)ST_get, METH_VARARGS,
     "get(exact, key) -> value index, -1 if absent, -2 for an interior marker."},
    {"walk", (PyCFunction)ST_walk, METH_O,
     "walk(name) -> [(start, value)]: the rules and carve-outs met, shortest first."},
    {"lookup", (PyCFunction)ST_lookup, METH_O,
     "lookup(name) -> Match, None or the defer sentinel, for a normalised name."},
    {"match", (PyCFunction)ST_match, METH_O,
     "match(host) -> Match, None or the defer sentinel, for a raw host."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ST_getset[] = {
    {"nbytes", (getter)ST_get_nbytes, NULL, "bytes allocated by the table", NULL},
    {"rules", (getter)ST_get_rules, NULL, "keys stored, interior markers excluded", NULL},
    {"tld_rules", (getter)ST_get_tld_rules, NULL, "whether a suffix key is one label", NULL},
    {"frozen", (getter)ST_get_frozen, NULL, "whether finish() has run", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SuffixTableType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "egresswatch._suffixtable.SuffixTable",
    .tp_basicsize = sizeof(SuffixTable),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "SuffixTable(defer, hugepages=True): the matcher's native suffix table.",
    .tp_new = ST_new,
    .tp_dealloc = (destructor)ST_dealloc,
    .tp_methods = ST_methods,
    .tp_getset = ST_getset,
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "egresswatch._suffixtable",
    .m_doc = "Native suffix table for egresswatch.matcher.",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__suffixtable(void)
{
    if (PyType_Ready(&SuffixTableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "SuffixTable", (PyObject *)&SuffixTableType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/*
 * A fault-injecting PKCS#11 module for Trellis's tests.
 *
 * It forwards every call to the real module named by TRELLIS_PKCS11_REAL_MODULE
 * (SoftHSM2 in the tests), except that while the file named by
 * TRELLIS_PKCS11_FAULT_FILE exists, opening sessions answers
 * CKR_TOKEN_NOT_PRESENT and signing answers CKR_DEVICE_REMOVED — what a
 * network HSM that dropped off the network, or a pulled USB token, looks like.
 *
 * While TRELLIS_PKCS11_LIE_EXTRACTABLE is set, reading CKA_EXTRACTABLE answers
 * CK_TRUE whatever the key is: a token that silently makes (or claims to
 * make) an extractable key, which Trellis must refuse.
 *
 * While TRELLIS_PKCS11_NO_COPY is set, C_CopyObject answers
 * CKR_FUNCTION_NOT_SUPPORTED (modules without object copies). While
 * TRELLIS_PKCS11_COPY_CANNOT_SIGN is set, copies are made but C_SignInit
 * with one answers CKR_KEY_FUNCTION_NOT_PERMITTED (a module whose session
 * copies do not sign). Trellis must sign through the token object then.
 *
 * While the file named by TRELLIS_PKCS11_HIDE_FILE exists, C_FindObjects finds
 * nothing (a module that does not show a key yet). A C_Initialize made while
 * the file named by TRELLIS_PKCS11_STALE_FILE exists leaves the module unable
 * to read its token: C_GetTokenInfo answers CKR_GENERAL_ERROR for every slot
 * until the next C_Initialize made without that file — what SoftHSM2 does
 * when it is initialised while another process writes the token's files.
 * TRELLIS_PKCS11_STALE_INITS=N makes the first N C_Initialize calls of the
 * process stale the same way: a token that stays unreadable for several
 * initialisations in a row.
 *
 * Only the v2.40 function list is offered (no C_GetInterface), so callers fall
 * back to C_GetFunctionList. The list is treated as a version followed by
 * function pointers in the standard order; the indexes below are the
 * positions of C_Initialize, C_GetTokenInfo, C_OpenSession, C_CopyObject,
 * C_GetAttributeValue, C_FindObjectsInit, C_FindObjects, C_SignInit and C_Sign.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef unsigned long CK_ULONG;
typedef CK_ULONG CK_RV;
typedef struct { unsigned char major, minor; } CK_VERSION;

#define FUNCTIONS 68
typedef struct {
    CK_VERSION version;
    void *fn[FUNCTIONS];
} FUNCTION_LIST;

#define IDX_INITIALIZE 0
#define IDX_GET_TOKEN_INFO 6
#define IDX_OPEN_SESSION 12
#define IDX_COPY_OBJECT 21
#define IDX_GET_ATTRIBUTE_VALUE 24
#define IDX_FIND_OBJECTS_INIT 26
#define IDX_FIND_OBJECTS 27
#define IDX_SIGN_INIT 42
#define IDX_SIGN 43

#define CKR_OK 0x0UL
#define CKR_GENERAL_ERROR 0x5UL
#define CKR_DEVICE_REMOVED 0x32UL
#define CKR_TOKEN_NOT_PRESENT 0xE0UL
#define CKR_FUNCTION_NOT_SUPPORTED 0x54UL
#define CKR_KEY_FUNCTION_NOT_PERMITTED 0x68UL
#define CKA_EXTRACTABLE 0x162UL

typedef struct {
    CK_ULONG type;
    void *value;
    CK_ULONG len;
} ATTRIBUTE;

static FUNCTION_LIST *real;
static FUNCTION_LIST shim;

static int file_named_by(const char *variable) {
    const char *path = getenv(variable);
    return path && access(path, F_OK) == 0;
}

static int faulty(void) {
    return file_named_by("TRELLIS_PKCS11_FAULT_FILE");
}

/* Set by a C_Initialize made while TRELLIS_PKCS11_STALE_FILE exists. */
static int stale;

typedef CK_RV (*initialize_fn)(void *);
typedef CK_RV (*get_token_info_fn)(CK_ULONG, void *);
typedef CK_RV (*find_objects_fn)(CK_ULONG, CK_ULONG *, CK_ULONG, CK_ULONG *);

/* C_Initialize calls made so far by this process. */
static long initializations;

/* Whether this (the n-th, from 0) initialisation is one of the stale ones
 * asked for by TRELLIS_PKCS11_STALE_INITS. */
static int stale_by_count(long n) {
    const char *count = getenv("TRELLIS_PKCS11_STALE_INITS");
    return count && n < atol(count);
}

static CK_RV initialize(void *args) {
    CK_RV rv = ((initialize_fn)real->fn[IDX_INITIALIZE])(args);
    long n = __atomic_fetch_add(&initializations, 1, __ATOMIC_ACQ_REL);
    if (rv == CKR_OK)
        __atomic_store_n(&stale, file_named_by("TRELLIS_PKCS11_STALE_FILE") || stale_by_count(n),
                         __ATOMIC_RELEASE);
    return rv;
}

static CK_RV get_token_info(CK_ULONG slot, void *info) {
    if (__atomic_load_n(&stale, __ATOMIC_ACQUIRE)) return CKR_GENERAL_ERROR;
    return ((get_token_info_fn)real->fn[IDX_GET_TOKEN_INFO])(slot, info);
}

static CK_RV find_objects(CK_ULONG session, CK_ULONG *objects, CK_ULONG max, CK_ULONG *count) {
    CK_RV rv = ((find_objects_fn)real->fn[IDX_FIND_OBJECTS])(session, objects, max, count);
    if (rv == CKR_OK && count && file_named_by("TRELLIS_PKCS11_HIDE_FILE")) *count = 0;
    return rv;
}

typedef CK_RV (*open_session_fn)(CK_ULONG, CK_ULONG, void *, void *, CK_ULONG *);
typedef CK_RV (*find_init_fn)(CK_ULONG, void *, CK_ULONG);
typedef CK_RV (*sign_init_fn)(CK_ULONG, void *, CK_ULONG);
typedef CK_RV (*sign_fn)(CK_ULONG, unsigned char *, CK_ULONG, unsigned char *, CK_ULONG *);
typedef CK_RV (*copy_object_fn)(CK_ULONG, CK_ULONG, void *, CK_ULONG, CK_ULONG *);

/* Handles of the copies made (the newest COPIES), for COPY_CANNOT_SIGN. */
#define COPIES 256
static CK_ULONG copies[COPIES];
static unsigned copies_made;

static int is_copy(CK_ULONG object) {
    unsigned n = copies_made < COPIES ? copies_made : COPIES;
    for (unsigned i = 0; i < n; i++)
        if (copies[i] == object) return 1;
    return 0;
}

static CK_RV copy_object(CK_ULONG session, CK_ULONG object, void *template_, CK_ULONG count, CK_ULONG *new_object) {
    if (getenv("TRELLIS_PKCS11_NO_COPY")) return CKR_FUNCTION_NOT_SUPPORTED;
    CK_RV rv = ((copy_object_fn)real->fn[IDX_COPY_OBJECT])(session, object, template_, count, new_object);
    if (rv == CKR_OK && new_object) copies[__atomic_fetch_add(&copies_made, 1, __ATOMIC_RELAXED) % COPIES] = *new_object;
    return rv;
}

typedef CK_RV (*get_attribute_fn)(CK_ULONG, CK_ULONG, ATTRIBUTE *, CK_ULONG);

static CK_RV get_attribute_value(CK_ULONG session, CK_ULONG object, ATTRIBUTE *template_, CK_ULONG count) {
    CK_RV rv = ((get_attribute_fn)real->fn[IDX_GET_ATTRIBUTE_VALUE])(session, object, template_, count);
    if (getenv("TRELLIS_PKCS11_LIE_EXTRACTABLE") && template_) {
        for (CK_ULONG i = 0; i < count; i++) {
            if (template_[i].type == CKA_EXTRACTABLE && template_[i].value && template_[i].len >= 1)
                *(unsigned char *)template_[i].value = 1;
        }
    }
    return rv;
}

static CK_RV open_session(CK_ULONG slot, CK_ULONG flags, void *app, void *notify, CK_ULONG *session) {
    if (faulty()) return CKR_TOKEN_NOT_PRESENT;
    return ((open_session_fn)real->fn[IDX_OPEN_SESSION])(slot, flags, app, notify, session);
}

static CK_RV find_objects_init(CK_ULONG session, void *template_, CK_ULONG count) {
    if (faulty()) return CKR_DEVICE_REMOVED;
    return ((find_init_fn)real->fn[IDX_FIND_OBJECTS_INIT])(session, template_, count);
}

static CK_RV sign_init(CK_ULONG session, void *mechanism, CK_ULONG key) {
    if (faulty()) return CKR_DEVICE_REMOVED;
    if (getenv("TRELLIS_PKCS11_COPY_CANNOT_SIGN") && is_copy(key)) return CKR_KEY_FUNCTION_NOT_PERMITTED;
    return ((sign_init_fn)real->fn[IDX_SIGN_INIT])(session, mechanism, key);
}

static CK_RV sign(CK_ULONG session, unsigned char *data, CK_ULONG len, unsigned char *sig, CK_ULONG *sig_len) {
    if (faulty()) return CKR_DEVICE_REMOVED;
    return ((sign_fn)real->fn[IDX_SIGN])(session, data, len, sig, sig_len);
}

typedef CK_RV (*get_function_list_fn)(FUNCTION_LIST **);

CK_RV C_GetFunctionList(FUNCTION_LIST **list) {
    if (!real) {
        const char *path = getenv("TRELLIS_PKCS11_REAL_MODULE");
        void *lib = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
        get_function_list_fn get = lib ? (get_function_list_fn)dlsym(lib, "C_GetFunctionList") : NULL;
        if (!get || get(&real) != CKR_OK || !real) return CKR_GENERAL_ERROR;
        memcpy(&shim, real, sizeof shim);
        shim.fn[IDX_INITIALIZE] = (void *)initialize;
        shim.fn[IDX_GET_TOKEN_INFO] = (void *)get_token_info;
        shim.fn[IDX_FIND_OBJECTS] = (void *)find_objects;
        shim.fn[IDX_OPEN_SESSION] = (void *)open_session;
        shim.fn[IDX_COPY_OBJECT] = (void *)copy_object;
        shim.fn[IDX_GET_ATTRIBUTE_VALUE] = (void *)get_attribute_value;
        shim.fn[IDX_FIND_OBJECTS_INIT] = (void *)find_objects_init;
        shim.fn[IDX_SIGN_INIT] = (void *)sign_init;
        shim.fn[IDX_SIGN] = (void *)sign;
    }
    *list = &shim;
    return CKR_OK;
}

/* The C half of rowcast._speedups: what no Python-level trick makes fast enough.
 *
 * One function, `changes`: the snapshot=True writes of rows read by a backfill or an
 * initial snapshot (rowcast.sources._rows.Rows), each a copy of a template Change with
 * its pk and after image taken from a row of values. Python's own loop (a dict display
 * and a drafted Change per row) is `rowcast._speedups.accelerated.snapshot_rows`'s
 * fallback, and the plain constructor loop its reference; tests/test_speedups.py checks
 * that the three give equal Changes.
 *
 * Optional: the wheel's build hook (hatch_build.py) compiles it where a C compiler is;
 * where none is, rowcast runs on the Python paths. VERSION changes with the signature,
 * so that a stale build is left unused rather than called wrongly.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#define VERSION 1
#define MAX_SLOTS 64

#ifdef Py_T_OBJECT_EX
#define OBJECT_SLOT Py_T_OBJECT_EX
#else
#define OBJECT_SLOT T_OBJECT_EX
#endif

/* The offset of the object slot `descr` (a member descriptor) of `type` or a base. */
static int
slot_offset(PyObject *descr, PyTypeObject *type, Py_ssize_t *offset)
{
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_SetString(PyExc_TypeError, "a slot's member descriptor is needed");
        return -1;
    }
    PyMemberDescrObject *member = (PyMemberDescrObject *)descr;
    if (!PyType_IsSubtype(type, PyDescr_TYPE(member)) || member->d_member->type != OBJECT_SLOT
        || (member->d_member->flags & READONLY)) {
        PyErr_SetString(PyExc_TypeError, "not a writable object slot of the template's class");
        return -1;
    }
    *offset = member->d_member->offset;
    return 0;
}

/* The offsets of the template's other object slots, from its class and its bases. */
static int
other_slots(PyTypeObject *type, Py_ssize_t pk_at, Py_ssize_t after_at, Py_ssize_t *offsets)
{
    int count = 0;
    PyObject *mro = type->tp_mro;
    for (Py_ssize_t m = 0; m < PyTuple_GET_SIZE(mro); m++) {
        PyTypeObject *base = (PyTypeObject *)PyTuple_GET_ITEM(mro, m);
        for (PyMemberDef *def = base->tp_members; def != NULL && def->name != NULL; def++) {
            if (def->type != OBJECT_SLOT || def->offset == pk_at || def->offset == after_at)
                continue;
            if (count == MAX_SLOTS) {
                PyErr_SetString(PyExc_TypeError, "the template's class has too many slots");
                return -1;
            }
            offsets[count++] = def->offset;
        }
    }
    return count;
}

/* The indexes of the key's values in a row: `key`, an int or a tuple of ints. */
static Py_ssize_t *
key_indexes(PyObject *key, Py_ssize_t *count)
{
    int one = PyLong_Check(key);
    if (!one && !PyTuple_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "key must be an int or a tuple of ints");
        return NULL;
    }
    *count = one ? 1 : PyTuple_GET_SIZE(key);
    Py_ssize_t *indexes = PyMem_Malloc(sizeof(Py_ssize_t) * (*count ? *count : 1));
    if (indexes == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t k = 0; k < *count; k++) {
        PyObject *item = one ? key : PyTuple_GET_ITEM(key, k);
        if (!PyLong_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "key must be an int or a tuple of ints");
            PyMem_Free(indexes);
            return NULL;
        }
        Py_ssize_t index = PyLong_AsSsize_t(item);
        if (index < 0) { /* negative, or beyond a Py_ssize_t */
            PyErr_SetString(PyExc_IndexError, "a key index must be a row's index, from 0");
            PyMem_Free(indexes);
            return NULL;
        }
        indexes[k] = index;
    }
    return indexes;
}

/* The key of `row`: its value at the one index, or a tuple of its values (NULL: failed). */
static PyObject *
row_key(PyObject *row, int one, const Py_ssize_t *indexes, Py_ssize_t count)
{
    Py_ssize_t width = PyTuple_GET_SIZE(row);
    for (Py_ssize_t k = 0; k < count; k++) {
        if (indexes[k] >= width) {
            PyErr_SetString(PyExc_IndexError, "a key index is past a row's values");
            return NULL;
        }
    }
    if (one) {
        PyObject *value = PyTuple_GET_ITEM(row, indexes[0]);
        Py_INCREF(value);
        return value;
    }
    PyObject *pk = PyTuple_New(count);
    if (pk == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < count; k++) {
        PyObject *value = PyTuple_GET_ITEM(row, indexes[k]);
        Py_INCREF(value);
        PyTuple_SET_ITEM(pk, k, value);
    }
    return pk;
}

/* The dict of a row's first len(names) values, by name. */
static PyObject *
row_image(PyObject *row, PyObject *names)
{
    Py_ssize_t width = PyTuple_GET_SIZE(names);
    if (PyTuple_GET_SIZE(row) < width) {
        PyErr_SetString(PyExc_ValueError, "a row holds fewer values than names");
        return NULL;
    }
    PyObject *image = PyDict_New();
    if (image == NULL)
        return NULL;
    for (Py_ssize_t c = 0; c < width; c++) {
        if (PyDict_SetItem(image, PyTuple_GET_ITEM(names, c), PyTuple_GET_ITEM(row, c)) < 0) {
            Py_DECREF(image);
            return NULL;
        }
    }
    return image;
}

PyDoc_STRVAR(changes_doc,
"changes(template, rows, names, key, pk_slot, after_slot, skip) -> list\n\n"
"One copy of `template` (an object of a class of slots only, on `object`) per row\n"
"of `rows` (a list of tuples), its slot `pk_slot` (a member descriptor) set to the\n"
"row's key (its value at `key`, an int, or a tuple of its values at `key`, a tuple\n"
"of ints, each from 0), its slot `after_slot` to a new dict of the row's first\n"
"len(names) values by `names` (a tuple of str), every other slot to the template's;\n"
"a row whose key is in `skip` (a set, or None) is left out.");

/* Whether objects of `type` are plain objects of slots: no __dict__, no items, and no C
 * base but `object` (tp_alloc would give a dict or a set of a slotted subclass unset up). */
static int
slots_only(PyTypeObject *type)
{
    PyTypeObject *base = type;
    while (base != NULL && (base->tp_flags & Py_TPFLAGS_HEAPTYPE))
        base = base->tp_base;
    if (base != &PyBaseObject_Type || type->tp_dictoffset != 0 || type->tp_itemsize != 0) {
        PyErr_SetString(PyExc_TypeError, "the template's class must hold slots only");
        return 0;
    }
    return 1;
}

/* What every row's Change is made with: checked once, before any row is. */
typedef struct {
    PyTypeObject *type; /* the template's class, held (Python code may reassign it) */
    Py_ssize_t pk_at, after_at, offsets[MAX_SLOTS];
    int slots, one;
    Py_ssize_t count, *indexes;
} Plan;

static int
plan_changes(Plan *plan, PyObject *template, PyObject *names, PyObject *key, PyObject *pk_slot,
             PyObject *after_slot, PyObject *skip)
{
    PyTypeObject *type = Py_TYPE(template);
    if (!slots_only(type))
        return -1;
    if (skip != Py_None && !PyAnySet_Check(skip)) {
        PyErr_SetString(PyExc_TypeError, "skip must be a set or None");
        return -1;
    }
    if (slot_offset(pk_slot, type, &plan->pk_at) < 0
        || slot_offset(after_slot, type, &plan->after_at) < 0)
        return -1;
    if (plan->pk_at == plan->after_at) {
        PyErr_SetString(PyExc_ValueError, "pk_slot and after_slot must be two slots");
        return -1;
    }
    plan->slots = other_slots(type, plan->pk_at, plan->after_at, plan->offsets);
    if (plan->slots < 0)
        return -1;
    for (Py_ssize_t c = 0; c < PyTuple_GET_SIZE(names); c++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(names, c))) { /* no __hash__ of Python's */
            PyErr_SetString(PyExc_TypeError, "names must be a tuple of str");
            return -1;
        }
    }
    plan->indexes = key_indexes(key, &plan->count);
    if (plan->indexes == NULL)
        return -1;
    plan->one = PyLong_Check(key);
    plan->type = (PyTypeObject *)Py_NewRef(type);
    return 0;
}

/* The Change of `row`, a copy of `template` (NULL: failed; *skipped: its key is in `skip`). */
static PyObject *
row_change(const Plan *plan, PyObject *template, PyObject *row, PyObject *names, PyObject *skip,
           int *skipped)
{
    PyObject *pk = row_key(row, plan->one, plan->indexes, plan->count);
    if (pk == NULL)
        return NULL;
    if (skip != Py_None) {
        int in = PySet_Contains(skip, pk); /* may run Python code: a key's __eq__ */
        if (in != 0) {
            Py_DECREF(pk);
            *skipped = in > 0;
            return NULL;
        }
    }
    PyObject *image = row_image(row, names);
    if (image == NULL) {
        Py_DECREF(pk);
        return NULL;
    }
    PyObject *change = plan->type->tp_alloc(plan->type, 0); /* may run a __del__ */
    if (change == NULL || Py_TYPE(template) != plan->type) {
        if (change != NULL)
            PyErr_SetString(PyExc_RuntimeError, "the template's class changed meanwhile");
        Py_XDECREF(change);
        Py_DECREF(pk);
        Py_DECREF(image);
        return NULL;
    }
    /* from here on, no Python code runs: the template's slots are copied as they are */
    for (int s = 0; s < plan->slots; s++) {
        PyObject *value = *(PyObject **)((char *)template + plan->offsets[s]);
        *(PyObject **)((char *)change + plan->offsets[s]) = Py_XNewRef(value);
    }
    *(PyObject **)((char *)change + plan->pk_at) = pk;
    *(PyObject **)((char *)change + plan->after_at) = image;
    return change;
}

static PyObject *
changes(PyObject *module, PyObject *args)
{
    PyObject *template, *rows, *names, *key, *pk_slot, *after_slot, *skip;
    if (!PyArg_ParseTuple(args, "OO!O!OOOO:changes", &template, &PyList_Type, &rows,
                          &PyTuple_Type, &names, &key, &pk_slot, &after_slot, &skip))
        return NULL;
    Plan plan;
    if (plan_changes(&plan, template, names, key, pk_slot, after_slot, skip) < 0)
        return NULL;
    PyObject *made = PyList_New(0);
    /* the list's length is read again at each row: Python code may change it meanwhile */
    for (Py_ssize_t r = 0; made != NULL && r < PyList_GET_SIZE(rows); r++) {
        PyObject *row = PyList_GET_ITEM(rows, r);
        if (!PyTuple_Check(row)) {
            PyErr_SetString(PyExc_TypeError, "each row must be a tuple");
            Py_CLEAR(made);
            break;
        }
        int skipped = 0;
        Py_INCREF(row); /* held while Python code may run */
        PyObject *change = row_change(&plan, template, row, names, skip, &skipped);
        Py_DECREF(row);
        if (change == NULL) {
            if (!skipped)
                Py_CLEAR(made);
            continue;
        }
        if (PyList_Append(made, change) < 0)
            Py_CLEAR(made);
        Py_DECREF(change);
    }
    PyMem_Free(plan.indexes);
    Py_DECREF(plan.type);
    return made;
}

static PyMethodDef methods[] = {
    {"changes", changes, METH_VARARGS, changes_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "rowcast._cspeedups",
    "The C half of rowcast._speedups (optional: built where a C compiler is).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__cspeedups(void)
{
    PyObject *made = PyModule_Create(&module);
    if (made != NULL && PyModule_AddIntConstant(made, "VERSION", VERSION) < 0) {
        Py_DECREF(made);
        return NULL;
    }
    return made;
}

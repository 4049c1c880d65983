//! JSON and YAML documents read as policies are (YAML 1.2 core schema, duplicate keys and
//! aliases refused), for the files toolgate reads besides policies: policy tests and
//! policies in other formats to import. Each value comes with the line it starts on.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use toolgate_core::policy::pointer_token;
use toolgate_core::policy::source::{Format, Node, NodeValue};

/// Parse `text` (`format`: `json`, `yaml`, or `auto`: by `path`'s extension if given, the
/// file the text was read from, else JSON when it starts with `{` or `[`; as policies are).
/// Returns the document as Python values and a dict from each value's JSON pointer to its
/// 1-based line. Raises ValueError with the line of a syntax error.
#[pyfunction]
#[pyo3(signature = (text, *, format = "auto", path = None))]
pub fn read_document<'py>(
    py: Python<'py>,
    text: &str,
    format: &str,
    path: Option<std::path::PathBuf>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyDict>)> {
    let name = path.as_deref().and_then(|p| p.file_name()?.to_str());
    let node = Format::choose(format, name, text)
        .map_err(PyValueError::new_err)?
        .parse(text)
        .map_err(|e| match e.line {
            Some(line) => PyValueError::new_err(format!("line {line}: {}", e.message)),
            None => PyValueError::new_err(e.message),
        })?;
    let lines = PyDict::new(py);
    let value = to_python(py, &node, &mut String::new(), &lines)?;
    Ok((value, lines))
}

fn to_python<'py>(
    py: Python<'py>,
    node: &Node,
    pointer: &mut String,
    lines: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Some(line) = node.line {
        lines.set_item(pointer.as_str(), line)?;
    }
    let value = match &node.value {
        NodeValue::Null => py.None().into_bound(py),
        NodeValue::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        NodeValue::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any()
            }
        }
        NodeValue::String(s) => s.into_pyobject(py)?.into_any(),
        NodeValue::Array(items) => {
            let list = PyList::empty(py);
            for (i, item) in items.iter().enumerate() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&i.to_string());
                list.append(to_python(py, item, pointer, lines)?)?;
                pointer.truncate(len);
            }
            list.into_any()
        }
        NodeValue::Object(members) => {
            let dict = PyDict::new(py);
            for m in members {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&pointer_token(&m.key));
                dict.set_item(&m.key, to_python(py, &m.value, pointer, lines)?)?;
                pointer.truncate(len);
            }
            dict.into_any()
        }
    };
    Ok(value)
}

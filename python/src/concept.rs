//! `Concept`: a stored concept as Python sees it, built here from the decoded answer.
//!
//! Building it in Rust moves the decoded strings instead of unpacking a tuple in Python (a
//! Python `__init__` of eight attributes cost about 2.5 µs a concept, as much as the rest of
//! a `get_many`). The vector stays f32 until asked for: `embedding` makes the list of floats
//! once, `embedding_array()` a numpy array over one copy of its little-endian bytes.

use std::sync::{Arc, OnceLock};

use pyo3::basic::CompareOp;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use sutra_client::sutra_protocol::{Attributes, Concept as Decoded, Vector};

/// A stored concept.
///
/// `embedding` is a list of floats (`None` without a vector), made once; `embedding_array()`
/// is the same vector as a read-only numpy float32 array, made without Python floats.
/// `created_at`/`expires_at` are ISO-8601 UTC strings (`expires_at` `None` for no expiry);
/// `created_at_ms`/`expires_at_ms` the server's Unix milliseconds. Equal when every field is.
#[pyclass(frozen, module = "sutra_storage_client_tcp", name = "Concept")]
#[expect(
    clippy::struct_field_names,
    reason = "the seed's attribute names: concept.concept_type"
)]
pub(crate) struct Concept {
    id: String,
    content: String,
    concept_type: String,
    model: String,
    attributes: Attributes,
    vector: Option<Vector>,
    /// When the server stored this version, Unix milliseconds.
    #[pyo3(get)]
    created_at_ms: u64,
    /// When it expires, Unix milliseconds; `None` never.
    #[pyo3(get)]
    expires_at_ms: Option<u64>,
    /// `embedding`, made on first use (the seed reads it twice: a test, then the value).
    list: OnceLock<Py<PyList>>,
    /// The vector's little-endian bytes, made on first use of `embedding_array()`.
    bytes: OnceLock<Py<PyBytes>>,
}

impl Concept {
    /// The decoded concept, moved when this answer holds the only reference (always, for a
    /// response read off the wire).
    pub(crate) fn new(decoded: Arc<Decoded>) -> Concept {
        let decoded = Arc::unwrap_or_clone(decoded);
        Concept {
            id: decoded.id.as_str().to_owned(),
            content: decoded.content,
            concept_type: decoded.concept_type,
            model: decoded.model,
            attributes: decoded.attributes,
            vector: decoded.embedding,
            created_at_ms: decoded.created_at_ms,
            expires_at_ms: decoded.expires_at_ms,
            list: OnceLock::new(),
            bytes: OnceLock::new(),
        }
    }
}

/// `ms` as ISO-8601 UTC with milliseconds, as Python's
/// `datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds")`.
fn iso(ms: u64) -> String {
    let (days, of_day) = (ms / 86_400_000, ms % 86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let (hours, minutes, seconds, millis) = (
        of_day / 3_600_000,
        of_day / 60_000 % 60,
        of_day / 1000 % 60,
        of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}+00:00")
}

#[pymethods]
impl Concept {
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    #[getter]
    fn content(&self) -> &str {
        &self.content
    }

    #[getter]
    fn concept_type(&self) -> &str {
        &self.concept_type
    }

    #[getter]
    fn model(&self) -> &str {
        &self.model
    }

    /// The attributes, as a new dict.
    #[getter]
    fn attributes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (key, value) in &self.attributes {
            dict.set_item(key, value)?;
        }
        Ok(dict)
    }

    /// The vector as a list of floats (the same list on every access); `None` without one.
    #[getter]
    fn embedding(&self, py: Python<'_>) -> PyResult<Option<Py<PyList>>> {
        let Some(vector) = &self.vector else {
            return Ok(None);
        };
        if let Some(list) = self.list.get() {
            return Ok(Some(list.clone_ref(py)));
        }
        let list = PyList::new(py, vector.as_slice().iter().map(|&value| f64::from(value)))?;
        Ok(Some(self.list.get_or_init(|| list.unbind()).clone_ref(py)))
    }

    /// The vector as a read-only numpy float32 array over its little-endian bytes (no
    /// Python floats made); `None` without one.
    fn embedding_array(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let Some(vector) = &self.vector else {
            return Ok(None);
        };
        let bytes = if let Some(bytes) = self.bytes.get() {
            bytes.clone_ref(py)
        } else {
            let raw: Vec<u8> = vector
                .as_slice()
                .iter()
                .flat_map(|value| value.to_le_bytes())
                .collect();
            let bytes = PyBytes::new(py, &raw).unbind();
            self.bytes.get_or_init(|| bytes).clone_ref(py)
        };
        let array = py
            .import("numpy")?
            .call_method1("frombuffer", (bytes, "<f4"))?;
        Ok(Some(array.unbind()))
    }

    /// How many values the vector has (0 without one).
    #[getter]
    fn dimension(&self) -> usize {
        self.vector.as_ref().map_or(0, Vector::len)
    }

    /// When the server stored this version, ISO-8601 UTC.
    #[getter]
    fn created_at(&self) -> String {
        iso(self.created_at_ms)
    }

    /// When it expires, ISO-8601 UTC; `None` never.
    #[getter]
    fn expires_at(&self) -> Option<String> {
        self.expires_at_ms.map(iso)
    }

    /// The seed's `ConceptMetadata` of this concept.
    #[getter]
    fn metadata(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let class = py
            .import("sutra_storage_client_tcp")?
            .getattr("ConceptMetadata")?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("concept_type", &self.concept_type)?;
        kwargs.set_item("created_at", self.created_at())?;
        kwargs.set_item("expires_at", self.expires_at())?;
        kwargs.set_item("model", &self.model)?;
        kwargs.set_item("attributes", self.attributes(py)?)?;
        Ok(class.call((), Some(&kwargs))?.unbind())
    }

    fn __richcmp__(&self, other: &Bound<'_, PyAny>, op: CompareOp, py: Python<'_>) -> Py<PyAny> {
        let Ok(other) = other.cast::<Concept>() else {
            return py.NotImplemented();
        };
        let other = other.get();
        let equal = self.id == other.id
            && self.content == other.content
            && self.concept_type == other.concept_type
            && self.model == other.model
            && self.attributes == other.attributes
            && self.vector == other.vector
            && self.created_at_ms == other.created_at_ms
            && self.expires_at_ms == other.expires_at_ms;
        let answer = match op {
            CompareOp::Eq => equal,
            CompareOp::Ne => !equal,
            _ => return py.NotImplemented(),
        };
        answer.into_pyobject(py).map_or_else(
            |never| match never {},
            |value| value.to_owned().into_any().unbind(),
        )
    }

    /// `Concept(id='...', concept_type='...', model='...', dimension=256, content='...')`,
    /// the strings as Python writes them, the content cut at 40 characters.
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let repr =
            |text: &str| -> PyResult<String> { Ok(PyString::new(py, text).repr()?.to_string()) };
        let content: String = self.content.chars().take(40).collect();
        Ok(format!(
            "Concept(id={}, concept_type={}, model={}, dimension={}, content={})",
            repr(&self.id)?,
            repr(&self.concept_type)?,
            repr(&self.model)?,
            self.dimension(),
            repr(&content)?
        ))
    }
}

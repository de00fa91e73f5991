//! Python values to protocol requests, answers to Python values, failures to the package's
//! exceptions: shared by the blocking [`crate::Client`] and the asyncio client's `Wire`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use sutra_client::sutra_protocol::{
    ConceptId, LearnConcept, Learned, QueryByType, Request, Response, Search, SearchQuery,
    StoreConcept, StoreOutcome, Vector,
};
use sutra_client::ClientError;

use crate::concept::Concept;

/// `_error(kind, code, name, message) -> Exception`, set by the Python package.
static ERROR_FACTORY: OnceLock<Py<PyAny>> = OnceLock::new();

/// Registers the function that turns a failure into the package's exception: called with
/// `(kind, code, name, message)`, where `kind` is `server` (with the protocol error `code` and
/// its `name`), `connect`, `timeout`, `closed`, `invalid` or `protocol`.
#[pyfunction]
pub(crate) fn set_error_factory(factory: Py<PyAny>) {
    let _ = ERROR_FACTORY.set(factory);
}

fn error(py: Python<'_>, kind: &str, code: u16, name: &str, message: &str) -> PyErr {
    let Some(factory) = ERROR_FACTORY.get() else {
        return PyRuntimeError::new_err(format!("{kind}: {message}"));
    };
    match factory.call1(py, (kind, code, name, message)) {
        Ok(instance) => PyErr::from_value(instance.into_bound(py)),
        Err(failed) => failed,
    }
}

pub(crate) fn client_error(py: Python<'_>, failure: &ClientError) -> PyErr {
    let message = failure.to_string();
    match failure {
        ClientError::Server { code, message } => {
            error(py, "server", code.as_u16(), code.name(), message)
        }
        ClientError::Connect { .. } => error(py, "connect", 0, "", &message),
        ClientError::ConnectTimeout { .. } | ClientError::Timeout => {
            error(py, "timeout", 0, "", &message)
        }
        ClientError::ConnectionClosed => error(py, "closed", 0, "", &message),
        ClientError::InvalidRequest(_) => error(py, "invalid", 0, "", &message),
        // `ClientError` is non-exhaustive: anything newer is reported as a protocol error.
        _ => error(py, "protocol", 0, "", &message),
    }
}

fn invalid(py: Python<'_>, message: impl std::fmt::Display) -> PyErr {
    error(py, "invalid", 0, "", &message.to_string())
}

fn concept_id(py: Python<'_>, id: &str) -> PyResult<ConceptId> {
    ConceptId::parse(id).map_err(|failure| invalid(py, format!("concept id {id:?}: {failure}")))
}

/// A vector from a list of numbers, or from its little-endian f32 bytes (the package turns
/// numpy arrays and other sequences into bytes).
fn vector(py: Python<'_>, embedding: &Bound<'_, PyAny>) -> PyResult<Vector> {
    let values: Vec<f32> = if let Ok(list) = embedding.cast::<PyList>() {
        let mut values = Vec::with_capacity(list.len());
        for item in list.iter() {
            let value: f64 = item.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "embedding must be a sequence of floats, not one holding {}",
                    item.get_type()
                        .name()
                        .map_or_else(|_| "?".to_owned(), |name| name.to_string())
                ))
            })?;
            #[expect(
                clippy::cast_possible_truncation,
                reason = "a float32 vector; values beyond f32 become infinite and are refused"
            )]
            values.push(value as f32);
        }
        values
    } else if let Ok(bytes) = embedding.cast::<PyBytes>() {
        let bytes = bytes.as_bytes();
        if !bytes.len().is_multiple_of(4) {
            return Err(PyValueError::new_err(
                "an embedding's bytes must be whole little-endian float32 values",
            ));
        }
        bytes
            .chunks_exact(4)
            .map(|four| f32::from_le_bytes([four[0], four[1], four[2], four[3]]))
            .collect()
    } else {
        return Err(PyTypeError::new_err(
            "embedding must be a list of floats or little-endian float32 bytes",
        ));
    };
    let dimension = u32::try_from(values.len()).map_err(|_| invalid(py, "embedding too long"))?;
    Vector::new(values, dimension).map_err(|failure| invalid(py, format!("embedding: {failure}")))
}

/// One store: `(id, content, concept_type, model, attributes, embedding, ttl_seconds)`, the
/// embedding a list of floats or little-endian f32 bytes, read in place (see [`vector`]).
type StoreItem<'py> = (
    String,
    String,
    String,
    String,
    BTreeMap<String, String>,
    Option<Bound<'py, PyAny>>,
    Option<u64>,
);

/// One learn: `(content, concept_type, attributes, id, ttl_seconds)`.
type LearnItem = (
    String,
    String,
    BTreeMap<String, String>,
    Option<String>,
    Option<u64>,
);

fn store_request(py: Python<'_>, item: StoreItem<'_>) -> PyResult<StoreConcept> {
    let (id, content, concept_type, model, attributes, embedding, ttl_seconds) = item;
    Ok(StoreConcept {
        id: concept_id(py, &id)?,
        content,
        concept_type,
        model,
        attributes,
        embedding: embedding
            .map(|embedding| vector(py, &embedding))
            .transpose()?,
        ttl_seconds,
    })
}

fn learn_request(py: Python<'_>, item: LearnItem) -> PyResult<LearnConcept> {
    let (content, concept_type, attributes, id, ttl_seconds) = item;
    Ok(LearnConcept {
        id: id.map(|id| concept_id(py, &id)).transpose()?,
        content,
        concept_type,
        attributes,
        ttl_seconds,
    })
}

fn outcome<'py>(py: Python<'py>, outcome: &StoreOutcome) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("created", outcome.created)?;
    dict.set_item("created_at_ms", outcome.created_at_ms)?;
    dict.set_item("expires_at_ms", outcome.expires_at_ms)?;
    Ok(dict)
}

fn learned<'py>(py: Python<'py>, learned: &Learned) -> PyResult<Bound<'py, PyDict>> {
    let dict = outcome(py, &learned.outcome)?;
    dict.set_item("id", &learned.id)?;
    dict.set_item("tokens", learned.tokens)?;
    dict.set_item("truncated", learned.truncated)?;
    Ok(dict)
}

/// The answer as Python values (see the module docs of the package for each shape).
pub(crate) fn answer(
    py: Python<'_>,
    response: Result<Response, ClientError>,
) -> PyResult<Py<PyAny>> {
    let response = response.map_err(|failure| client_error(py, &failure))?;
    let value = match response {
        Response::Health(health) => {
            let dict = PyDict::new(py);
            dict.set_item("status", health.status)?;
            dict.set_item("role", health.role)?;
            dict.set_item("vector_dimension", health.vector_dimension)?;
            dict.set_item("concepts", health.concepts)?;
            dict.set_item("version", health.version)?;
            dict.set_item("uptime_seconds", health.uptime_seconds)?;
            dict.set_item(
                "model",
                (!health.model.is_empty()).then_some(health.model.as_str()),
            )?;
            dict.into_any()
        }
        Response::Stored(stored) => outcome(py, &stored)?.into_any(),
        Response::Concept(found) => Bound::new(py, Concept::new(found))?.into_any(),
        Response::Page(page) => {
            let concepts = PyList::empty(py);
            for found in page.concepts {
                concepts.append(Bound::new(py, Concept::new(found))?)?;
            }
            PyTuple::new(
                py,
                [
                    concepts.into_any(),
                    page.next_cursor.into_pyobject(py)?.into_any(),
                ],
            )?
            .into_any()
        }
        Response::Deleted { existed } => existed.into_pyobject(py)?.to_owned().into_any(),
        Response::Stats(stats) => {
            let dict = PyDict::new(py);
            dict.set_item("role", stats.role)?;
            dict.set_item("vector_dimension", stats.vector_dimension)?;
            for (name, value) in stats.counters {
                dict.set_item(name, value)?;
            }
            dict.into_any()
        }
        Response::Many(found) => {
            let list = PyList::empty(py);
            for item in found {
                match item {
                    Some(item) => list.append(Bound::new(py, Concept::new(item))?)?,
                    None => list.append(py.None())?,
                }
            }
            list.into_any()
        }
        Response::StoredMany(outcomes) => {
            let list = PyList::empty(py);
            for stored in &outcomes {
                list.append(outcome(py, stored)?)?;
            }
            list.into_any()
        }
        Response::Cleared { removed } => removed.into_pyobject(py)?.into_any(),
        Response::Learned(one) => learned(py, &one)?.into_any(),
        Response::LearnedMany(many) => {
            let list = PyList::empty(py);
            for one in &many {
                list.append(learned(py, one)?)?;
            }
            list.into_any()
        }
        Response::Authenticated => py.None().into_bound(py),
        Response::Found(results) => {
            let list = PyList::empty(py);
            for hit in results.hits {
                let item = PyDict::new(py);
                item.set_item("id", hit.id.as_str())?;
                item.set_item("score", f64::from(hit.score))?;
                let concept = match hit.concept {
                    Some(found) => Bound::new(py, Concept::new(found))?.into_any(),
                    None => py.None().into_bound(py),
                };
                item.set_item("concept", concept)?;
                list.append(item)?;
            }
            list.into_any()
        }
        Response::Error(failure) => {
            return Err(error(
                py,
                "server",
                failure.code.as_u16(),
                failure.code.name(),
                &failure.message,
            ))
        }
    };
    Ok(value.unbind())
}

/// The request of call `name` with `args` (see `Client.call` in the package).
pub(crate) fn build(py: Python<'_>, name: &str, args: &Bound<'_, PyTuple>) -> PyResult<Request> {
    Ok(match name {
        "health" => Request::Health,
        "stats" => Request::Stats,
        "store" => {
            let (item,): (StoreItem<'_>,) = args.extract()?;
            Request::StoreConcept(store_request(py, item)?)
        }
        "store_many" => {
            let (items,): (Vec<StoreItem<'_>>,) = args.extract()?;
            let stores = items
                .into_iter()
                .map(|item| store_request(py, item))
                .collect::<PyResult<Vec<_>>>()?;
            Request::StoreMany(stores)
        }
        "get" => {
            let (id,): (String,) = args.extract()?;
            Request::GetConceptById {
                id: concept_id(py, &id)?,
            }
        }
        "get_many" => {
            let (ids,): (Vec<String>,) = args.extract()?;
            let ids = ids
                .into_iter()
                .map(|id| concept_id(py, &id))
                .collect::<PyResult<Vec<_>>>()?;
            Request::GetMany { ids }
        }
        "query" => {
            let (concept_type, limit, cursor): (String, u32, String) = args.extract()?;
            Request::QueryByType(QueryByType {
                concept_type,
                limit,
                cursor,
            })
        }
        "delete" => {
            let (id,): (String,) = args.extract()?;
            Request::Delete {
                id: concept_id(py, &id)?,
            }
        }
        "search" => {
            let (embedding, text, k, concept_type, exact, ef, include_concepts): (
                Option<Bound<'_, PyAny>>,
                Option<String>,
                u32,
                String,
                bool,
                u32,
                bool,
            ) = args.extract()?;
            let query = match (embedding, text) {
                (Some(embedding), None) => SearchQuery::Vector(vector(py, &embedding)?),
                (None, Some(text)) => SearchQuery::Text(text),
                _ => return Err(invalid(py, "give exactly one of vector= and text=")),
            };
            Request::Search(Search {
                query,
                k,
                concept_type,
                exact,
                ef,
                include_concepts,
            })
        }
        "clear_type" => {
            let (concept_type,): (String,) = args.extract()?;
            Request::ClearType { concept_type }
        }
        "learn" => {
            let (item,): (LearnItem,) = args.extract()?;
            Request::LearnConcept(learn_request(py, item)?)
        }
        "learn_batch" => {
            let (items,): (Vec<LearnItem>,) = args.extract()?;
            let learns = items
                .into_iter()
                .map(|item| learn_request(py, item))
                .collect::<PyResult<Vec<_>>>()?;
            Request::LearnBatch(learns)
        }
        other => return Err(PyValueError::new_err(format!("no such call: {other}"))),
    })
}

//! `sutra_storage_client_tcp._native`: the Rust half of the Python client.
//!
//! [`Client`] wraps one `sutra_client::Client` (one pipelined TCP connection, reconnected on
//! the next call after it breaks) with a tokio runtime of its own that the calling threads
//! drive: each method builds one protocol request from Python values and blocks for the
//! answer with the GIL released. [`Wire`] is the same protocol without the I/O, for the asyncio
//! client, whose event loop drives its socket itself. Concepts come back as [`Concept`]
//! objects, the rest as plain Python values (dicts, lists, tuples); `sutra_storage_client_tcp`
//! wraps them in its API and defines the exceptions, whose factory it registers here with
//! [`set_error_factory`].

use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use sutra_client::sutra_protocol::Response;
use sutra_client::{ClientConfig, ClientError};

mod concept;
mod convert;
mod wire;

/// mimalloc for the extension's own allocations (Python's objects keep Python's allocator):
/// reading 100 concepts makes ~600 small and 100 one-kilobyte blocks that Python frees in
/// another order, and glibc malloc spent ~19% of a `get_many(100)` client's CPU on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use concept::Concept;
use convert::{answer, build, set_error_factory};
use wire::Wire;

/// A connection to one sutra-storage server, shared by every thread that uses it.
#[pyclass(frozen, module = "sutra_storage_client_tcp._native")]
struct Client {
    inner: sutra_client::Client,
    /// The client's own runtime, driven by the calling threads (tokio hands the driver over
    /// when several share the client): a call makes no hop to another thread and back (two
    /// wake-ups, about 40 µs a call on a VM).
    runtime: tokio::runtime::Runtime,
}

#[pymethods]
impl Client {
    /// A client for `addr` (`host:port`); it connects on first use.
    #[new]
    #[pyo3(signature = (addr, timeout, connect_timeout, auth_token=None, max_in_flight=4096))]
    fn new(
        addr: String,
        timeout: f64,
        connect_timeout: f64,
        auth_token: Option<String>,
        max_in_flight: usize,
    ) -> PyResult<Client> {
        let seconds = |value: f64, name: &str| {
            Duration::try_from_secs_f64(value)
                .ok()
                .filter(|duration| !duration.is_zero())
                .ok_or_else(|| {
                    PyValueError::new_err(format!("{name} must be a positive number of seconds"))
                })
        };
        let config = ClientConfig {
            request_timeout: seconds(timeout, "timeout")?,
            connect_timeout: seconds(connect_timeout, "connect_timeout")?,
            auth_token,
            max_in_flight: max_in_flight.max(1),
            ..ClientConfig::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| {
                PyRuntimeError::new_err(format!("starting the client runtime: {error}"))
            })?;
        Ok(Client {
            runtime,
            inner: sutra_client::Client::lazy(addr, config),
        })
    }

    /// `host:port`.
    #[getter]
    fn addr(&self) -> &str {
        self.inner.addr()
    }

    /// Runs one call, blocking without the GIL: `name` is the request (`health`, `stats`,
    /// `search`, `store`, `store_many`, `get`, `get_many`, `query`, `delete`, `clear_type`,
    /// `learn`, `learn_batch`) and `args` its arguments (see `_native.pyi`).
    fn call(&self, py: Python<'_>, name: &str, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
        let request = build(py, name, args)?;
        let client = self.inner.clone();
        let response = py.detach(|| self.runtime.block_on(client.call(request)));
        answer(py, response)
    }

    /// Runs several calls `[(name, args), ...]` at once, pipelined over the connection,
    /// blocking without the GIL: `[(ok, value_or_exception), ...]` in order (a call whose
    /// arguments are refused fails alone).
    fn batch<'py>(
        &self,
        py: Python<'py>,
        calls: Vec<(String, Bound<'py, PyTuple>)>,
    ) -> PyResult<Bound<'py, PyList>> {
        let total = calls.len();
        let mut refused = Vec::new();
        let mut requests = Vec::new();
        for (index, (name, args)) in calls.into_iter().enumerate() {
            match build(py, &name, &args) {
                Ok(request) => requests.push((index, request)),
                Err(failure) => refused.push((index, failure)),
            }
        }
        let client = self.inner.clone();
        // All the calls in one task: their answers wake one task, not one each.
        let run = async move {
            let calls = requests.into_iter().map(|(index, request)| {
                let client = client.clone();
                async move { (index, client.call(request).await) }
            });
            futures_util::future::join_all(calls).await
        };
        let responses = py.detach(|| self.runtime.block_on(run));
        results(py, total, responses, refused)
    }
}

/// `[(ok, value_or_exception), ...]` of a batch, in call order.
fn results(
    py: Python<'_>,
    total: usize,
    responses: Vec<(usize, Result<Response, ClientError>)>,
    refused: Vec<(usize, PyErr)>,
) -> PyResult<Bound<'_, PyList>> {
    let mut slots: Vec<Option<(bool, Py<PyAny>)>> = (0..total).map(|_| None).collect();
    for (index, failure) in refused {
        slots[index] = Some((false, failure.into_value(py).into_any()));
    }
    for (index, response) in responses {
        slots[index] = Some(match answer(py, response) {
            Ok(value) => (true, value),
            Err(failure) => (false, failure.into_value(py).into_any()),
        });
    }
    let list = PyList::empty(py);
    for slot in slots {
        let (ok, value) = slot.unwrap_or_else(|| (false, py.None()));
        list.append((ok, value))?;
    }
    Ok(list)
}

#[pymodule]
fn _native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Client>()?;
    module.add_class::<Concept>()?;
    module.add_class::<Wire>()?;
    module.add_function(wrap_pyfunction!(set_error_factory, module)?)?;
    module.add("PROTOCOL_ERRORS", {
        let codes: Vec<(u16, &str)> = sutra_client::sutra_protocol::ErrorCode::ALL
            .iter()
            .map(|code| (code.as_u16(), code.name()))
            .collect();
        codes
    })?;
    Ok(())
}

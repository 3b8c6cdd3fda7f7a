//! `capi::foreign_client`: a client written against the C vtable in a pipeline built
//! with the Rust API.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use conveyor::capi::*;
use conveyor::{Error, Pipeline, ProducerOptions};

#[derive(Default)]
struct Counters {
    events: AtomicUsize,
    frees: AtomicUsize,
}

unsafe extern "C" fn publish(
    userdata: *mut c_void,
    _events: *const conveyor_bytes,
    n: usize,
    published: *mut usize,
) -> u32 {
    // SAFETY: `userdata` is the `Counters` the test keeps alive; `published` is writable.
    unsafe {
        (*userdata.cast::<Counters>()).events.fetch_add(n, Ordering::SeqCst);
        *published = n;
    }
    CONVEYOR_PUBLISH_OK
}

unsafe extern "C" fn free(userdata: *mut c_void) {
    // SAFETY: as in `publish`.
    unsafe { (*userdata.cast::<Counters>()).frees.fetch_add(1, Ordering::SeqCst) };
}

fn vtable(counters: &Counters) -> conveyor_client_vtable {
    conveyor_client_vtable {
        struct_size: std::mem::size_of::<conveyor_client_vtable>() as u32,
        userdata: (counters as *const Counters).cast_mut().cast(),
        connect: None,
        close: None,
        publish: Some(publish),
        publish_async: None,
        free_userdata: Some(free),
    }
}

#[test]
fn a_c_client_delivers_in_a_rust_pipeline_and_its_userdata_is_freed_once() {
    let counters = Counters::default();
    // SAFETY: the callbacks only touch `counters`, which outlives the pipeline.
    let client = unsafe { foreign_client(&vtable(&counters), None) }.unwrap();
    let pipeline = Pipeline::builder(conveyor::Config::default()).any_client(client).build().unwrap();
    let producer = pipeline.producer(ProducerOptions::default()).unwrap();
    for i in 0..100u32 {
        producer.publish(&i.to_le_bytes(), None).unwrap();
    }
    pipeline.flush(Duration::from_secs(20)).unwrap();
    assert_eq!(counters.events.load(Ordering::SeqCst), 100);
    drop(producer);
    pipeline.close(Duration::from_secs(20)).unwrap();
    drop(pipeline);
    assert_eq!(counters.frees.load(Ordering::SeqCst), 1);
}

#[test]
fn a_bad_vtable_is_refused_and_its_userdata_stays_with_the_caller() {
    let counters = Counters::default();
    let mut bad = vtable(&counters);
    bad.publish = None;
    // SAFETY: as above; nothing is called.
    let err = unsafe { foreign_client(&bad, None) }.map(drop).unwrap_err();
    assert!(matches!(&err, Error::InvalidArgument(m) if m.contains("neither publish")), "{err}");
    let mut old = vtable(&counters);
    old.struct_size -= 8;
    // SAFETY: as above.
    assert!(unsafe { foreign_client(&old, None) }.is_err());
    assert_eq!(counters.frees.load(Ordering::SeqCst), 0);
}

//! The codec of every generated client and server: prost, with small first buffers.
//!
//! tonic's default codec reserves 8 KiB to encode and 8 KiB to decode for every call and
//! every stream, up front. A live stream (a learner's open tab) idles for hours with both
//! reserved: in a heap profile of 5,000 idle WebSockets they were 16 of the 28 KiB that
//! each connection cost. Buffers start at 256 bytes, which hold a live event and most
//! small answers, and grow to the message size when one needs more; the yield threshold
//! stays tonic's.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The first buffer of a call or stream, in each direction.
const FIRST_BUFFER: usize = 256;
/// tonic's default: how much a stream encodes before yielding to the runtime.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`FIRST_BUFFER`]-sized buffers.
#[derive(Debug, Clone, Copy)]
pub struct LeanCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(FIRST_BUFFER, YIELD_THRESHOLD)
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

//! `DoGet` on the wire without a copy. tonic's generated service encodes every `FlightData`
//! into one contiguous buffer, copying each batch's body once more before the socket. Here
//! `DoGet` is answered by hand: each message goes out as HTTP/2 data chunks, the gRPC frame
//! prefix with the protobuf fields before the body, then the body's chunks themselves (the
//! batch's own Arrow buffers, see [`super::encoded`]), so the only copy left is the kernel's.
//! The bytes on the wire are exactly what tonic would send (tested). Every other method goes
//! to tonic's service.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow_flight::Ticket;
use arrow_flight::flight_service_server::FlightServiceServer;
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message as ProstMessage;
use prost::bytes::{BufMut, Bytes, BytesMut};
use tonic::body::Body;
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;
use tonic::{Request, Status};

use super::encoded::Message;
use super::server::{MessageStream, Service as FlightService};

/// Path of the `DoGet` method.
const DO_GET: &str = "/arrow.flight.protocol.FlightService/DoGet";
/// Protobuf field number of `FlightData.data_body`.
const DATA_BODY: u32 = 1000;
/// The largest `DoGet` request read (a ticket is a few bytes of JSON).
const MAX_REQUEST: usize = 1 << 20;

/// The Flight service with `DoGet` answered without copying batch bodies.
#[derive(Clone)]
pub(crate) struct Direct {
    service: FlightService,
    inner: FlightServiceServer<FlightService>,
}

impl Direct {
    /// Serves `service`.
    pub(crate) fn new(service: FlightService) -> Direct {
        Direct {
            inner: FlightServiceServer::new(service.clone()),
            service,
        }
    }
}

impl NamedService for Direct {
    const NAME: &'static str = <FlightServiceServer<FlightService> as NamedService>::NAME;
}

impl Service<http::Request<Body>> for Direct {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        <FlightServiceServer<FlightService> as Service<http::Request<Body>>>::poll_ready(
            &mut self.inner,
            cx,
        )
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() != DO_GET {
            return self.inner.call(req);
        }
        let service = self.service.clone();
        Box::pin(async move {
            Ok(match do_get(service, req).await {
                Ok(r) => r,
                Err(status) => status.into_http(),
            })
        })
    }
}

async fn do_get(
    service: FlightService,
    req: http::Request<Body>,
) -> Result<http::Response<Body>, Status> {
    let (parts, body) = req.into_parts();
    if let Some(enc) = parts.headers.get("grpc-encoding") {
        if enc.as_bytes() != b"identity" {
            return Err(Status::unimplemented(format!(
                "request compression {enc:?} is not supported; send the ticket uncompressed"
            )));
        }
    }
    let bytes = http_body_util::Limited::new(body, MAX_REQUEST)
        .collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("reading the DoGet request: {e}")))?
        .to_bytes();
    let ticket = decode_unary::<Ticket>(&bytes)?;
    let stream = service
        .messages(Request::from_http(http::Request::from_parts(parts, ticket)))
        .await?;
    let mut http = http::Response::new(Body::new(Messages {
        stream,
        pending: VecDeque::new(),
        done: false,
    }));
    http.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(http)
}

/// Decodes the one length-prefixed, uncompressed message of a unary gRPC request.
fn decode_unary<M: ProstMessage + Default>(bytes: &[u8]) -> Result<M, Status> {
    let bad = |why: &str| Status::invalid_argument(format!("malformed DoGet request: {why}"));
    let (prefix, rest) = bytes
        .split_first_chunk::<5>()
        .ok_or_else(|| bad("no message"))?;
    if prefix[0] != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not supported; send the ticket uncompressed",
        ));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if rest.len() != len {
        return Err(bad("the length prefix does not match the message"));
    }
    M::decode(rest).map_err(|e| bad(&e.to_string()))
}

/// The gRPC frame of one message as chunks: the prefix (frame header, the protobuf fields
/// before the body, the body's key and length), then the body's chunks, shared.
fn frames(m: Message) -> (Bytes, Vec<Bytes>) {
    let body_len = m.body_len();
    let Message {
        header,
        body,
        app_metadata,
    } = m;
    let head = arrow_flight::FlightData {
        data_header: header,
        app_metadata,
        ..Default::default()
    };
    let head_len = head.encoded_len();
    let body_field = if body_len == 0 {
        0
    } else {
        prost::encoding::key_len(DATA_BODY)
            + prost::encoding::encoded_len_varint(body_len as u64)
            + body_len
    };
    let total = head_len + body_field;
    let mut prefix = BytesMut::with_capacity(5 + head_len + 16);
    prefix.put_u8(0);
    prefix.put_u32(u32::try_from(total).unwrap_or(u32::MAX));
    head.encode_raw(&mut prefix);
    if body_len == 0 {
        return (prefix.freeze(), Vec::new());
    }
    prost::encoding::encode_key(
        DATA_BODY,
        prost::encoding::WireType::LengthDelimited,
        &mut prefix,
    );
    prost::encoding::encode_varint(body_len as u64, &mut prefix);
    (prefix.freeze(), body)
}

/// The response body: each message as its frames, then the trailers with the final status.
struct Messages {
    stream: MessageStream,
    pending: VecDeque<Bytes>,
    done: bool,
}

impl http_body::Body for Messages {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(b) = self.pending.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let end = match self.stream.as_mut().poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(m))) => {
                let (prefix, body) = frames(m);
                self.pending.extend(body);
                return Poll::Ready(Some(Ok(Frame::data(prefix))));
            }
            Poll::Ready(Some(Err(status))) => status,
            Poll::Ready(None) => Status::ok(""),
        };
        self.done = true;
        let mut trailers = http::HeaderMap::new();
        if end.add_header(&mut trailers).is_err() {
            trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
        }
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What tonic's codec sends for a message: the 5-byte prefix, then the protobuf.
    fn tonic_frame<M: ProstMessage>(m: &M) -> Vec<u8> {
        let pb = m.encode_to_vec();
        let mut out = vec![0u8];
        out.extend_from_slice(&(pb.len() as u32).to_be_bytes());
        out.extend_from_slice(&pb);
        out
    }

    fn ours(m: &Message) -> Vec<u8> {
        let (prefix, body) = frames(m.clone());
        let mut out = prefix.to_vec();
        body.iter().for_each(|b| out.extend_from_slice(b));
        out
    }

    #[test]
    fn frames_are_the_bytes_tonic_sends() {
        let big = Bytes::from((0..70_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let cases = [
            Message::default(),
            Message::new(Bytes::from_static(b"header"), Bytes::new()),
            Message {
                header: Bytes::from_static(b"h"),
                body: vec![big.clone()],
                app_metadata: Bytes::from_static(b"{\"epoch\":0}"),
            },
            Message {
                header: Bytes::from(vec![7u8; 300]),
                body: vec![big.slice(..127), big.slice(200..64_000), big.slice(9..17)],
                app_metadata: Bytes::new(),
            },
        ];
        for m in &cases {
            assert_eq!(ours(m), tonic_frame(&m.to_flight_data()), "{m:?}");
        }
    }

    #[test]
    fn body_chunks_go_out_as_the_same_bytes_not_copies() {
        let a = Bytes::from(vec![1u8; 4096]);
        let b = Bytes::from(vec![2u8; 8192]);
        let m = Message {
            header: Bytes::from_static(b"h"),
            body: vec![a.clone(), b.clone()],
            app_metadata: Bytes::new(),
        };
        let (_, sent) = frames(m);
        let ptrs: Vec<_> = sent.iter().map(|c| c.as_ptr()).collect();
        assert_eq!(ptrs, [a.as_ptr(), b.as_ptr()]);
    }

    #[test]
    fn requests_are_decoded_or_refused_clearly() {
        let t = Ticket::new("{\"rank\":0}");
        let ok = tonic_frame(&t);
        assert_eq!(decode_unary::<Ticket>(&ok).expect("decodes"), t);
        let e = decode_unary::<Ticket>(&ok[..3]).unwrap_err();
        assert!(e.message().contains("no message"), "{e}");
        let e = decode_unary::<Ticket>(&ok[..ok.len() - 1]).unwrap_err();
        assert!(e.message().contains("length prefix"), "{e}");
        let mut compressed = ok.clone();
        compressed[0] = 1;
        let e = decode_unary::<Ticket>(&compressed).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unimplemented, "{e}");
    }
}

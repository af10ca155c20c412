use futures::try_join;

use thiserror::Error;

#[derive(Error, Debug, Clone)]
pub enum SettingsError {
    #[error("quic stream was closed early")]
    UnexpectedEnd,

    #[error("protocol error: {0}")]
    ProtoError(#[from] web_transport_proto::SettingsError),

    #[error("WebTransport is not supported")]
    WebTransportUnsupported,

    #[error("connection error")]
    ConnectionError(#[from] quinn::ConnectionError),

    #[error("read error")]
    ReadError(#[from] quinn::ReadError),

    #[error("write error")]
    WriteError(#[from] quinn::WriteError),
}

pub struct Settings {
    // A reference to the send/recv stream, so we don't close it until dropped.
    #[allow(dead_code)]
    send: quinn::SendStream,

    #[allow(dead_code)]
    recv: quinn::RecvStream,

    /// Whether the peer's SETTINGS enable WebTransport (voq patch: a plain HTTP/3 peer is
    /// answered rather than cut off).
    webtransport: bool,
}

impl Settings {
    // Establish the H3 connection.
    pub async fn connect(conn: &quinn::Connection) -> Result<Self, SettingsError> {
        let settings = Self::connect_any(conn).await?;
        if !settings.webtransport {
            return Err(SettingsError::WebTransportUnsupported);
        }
        Ok(settings)
    }

    /// Like [`Settings::connect`], also with a peer that does not support WebTransport (a
    /// plain HTTP/3 client), whose control streams are then kept open as well.
    pub async fn connect_any(conn: &quinn::Connection) -> Result<Self, SettingsError> {
        let recv = Self::accept(conn);
        let send = Self::open(conn);

        // Run both tasks concurrently until one errors or they both complete.
        let (send, (recv, webtransport)) = try_join!(send, recv)?;
        Ok(Self {
            send,
            recv,
            webtransport,
        })
    }

    /// Whether the peer's SETTINGS enable WebTransport.
    pub fn supports_webtransport(&self) -> bool {
        self.webtransport
    }

    async fn accept(conn: &quinn::Connection) -> Result<(quinn::RecvStream, bool), SettingsError> {
        let mut recv = conn.accept_uni().await?;
        let settings = web_transport_proto::Settings::read(&mut recv).await?;

        tracing::debug!(?settings, "received SETTINGS frame");

        Ok((recv, settings.supports_webtransport() != 0))
    }

    async fn open(conn: &quinn::Connection) -> Result<quinn::SendStream, SettingsError> {
        let mut settings = web_transport_proto::Settings::default();
        settings.enable_webtransport(1);

        tracing::debug!(?settings, "sending SETTINGS frame");

        let mut send = conn.open_uni().await?;
        settings.write(&mut send).await?;

        Ok(send)
    }
}

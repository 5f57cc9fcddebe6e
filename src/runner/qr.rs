//! Renders a pairing QR code for the terminal.

use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

/// The QR code as text (two modules per character cell), or `None` if the
/// payload cannot be encoded.
pub fn render(payload: &str) -> Option<String> {
    let code = QrCode::new(payload.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_a_real_pairing_payload() {
        let s = super::render("2@abc,ZGVm,Z2hp,amts,1").expect("encodes");
        assert!(s.lines().count() > 10);
        assert!(s.contains('█') || s.contains('▀') || s.contains('▄'));
    }
}

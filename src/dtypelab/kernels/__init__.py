"""Fast exact rounding engines shared by all formats (see ``table``, ``lut``, ``posit_closed``, ``engine``)."""

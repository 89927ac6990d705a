"""Small helpers with no occo_ros dependencies: atomic files, output safety, shipped
resources, the allocator setting."""

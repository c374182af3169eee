<?php
/**
 * Front controller: WordPress core lives in web/wp, so load the theme
 * through its blog header from there.
 */

define('WP_USE_THEMES', true);
require __DIR__ . '/wp/wp-blog-header.php';
